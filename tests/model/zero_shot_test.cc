// Zero-shot classifiers and probabilities against OpenCLIP's
// build_zero_shot_classifier with the 80 OpenAI ImageNet templates.

#include "tests/core/scratch_dir.h"
#include "model/zero_shot.h"

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/tokenizer/clip_tokenizer.h"
#include "tests/model/parity.h"

namespace oclip::testing {
namespace {

struct ZeroShotData {
  std::vector<std::string> classnames;
  std::vector<std::string> templates;
};

ZeroShotData ReadZeroShotData() {
  std::ifstream in(ReferencePath("zeroshot.json"));
  const nlohmann::json json = nlohmann::json::parse(in);
  return {json["classnames"].get<std::vector<std::string>>(),
          json["openai_imagenet_templates"].get<std::vector<std::string>>()};
}

class ZeroShotParityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ZeroShotParityTest, ClassifierAndProbabilitiesMatchOpenClip) {
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  auto tokenizer = ClipTokenizer::FromBpeGzip(ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const ZeroShotData data = ReadZeroShotData();
  ASSERT_EQ(data.templates.size(), 80u);
  torch::InferenceMode inference;
  auto classifier = BuildZeroShotClassifier(*model, **tokenizer, data.classnames, data.templates);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  const std::string expected = std::string(GetParam()) + ".expected.safetensors";
  const double weights_error =
      RelativeError(*classifier, LoadReferenceTensor(expected, "zeroshot_weights"));
  EXPECT_LT(weights_error, kParityTolerance);

  auto image_features = model->EncodeImage(LoadReferenceTensor(expected, "images"));
  ASSERT_TRUE(image_features.ok());
  torch::Tensor probs = ZeroShotProbabilities(*image_features, *classifier, model->logit_scale());
  torch::Tensor expected_probs = LoadReferenceTensor(expected, "zeroshot_probs");
  const double max_error = (probs - expected_probs).abs().max().item<double>();
  EXPECT_LT(max_error, 1e-4);
  std::cout << "[ parity   ] " << GetParam() << " zero-shot: weights rel. error " << weights_error
            << ", probabilities max abs. error " << max_error << "\n";
}

INSTANTIATE_TEST_SUITE_P(TinyModels, ZeroShotParityTest,
                         ::testing::Values("tiny-vit", "tiny-vit-quickgelu", "tiny-vit-h",
                                           "tiny-rn"));

TEST(ZeroShotTest, BatchingClassesDoesNotChangeTheClassifier) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  auto tokenizer = ClipTokenizer::FromBpeGzip(ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
  ASSERT_TRUE(tokenizer.ok());
  const ZeroShotData data = ReadZeroShotData();
  torch::InferenceMode inference;
  auto one = BuildZeroShotClassifier(*model, **tokenizer, data.classnames, data.templates, 1);
  auto all = BuildZeroShotClassifier(*model, **tokenizer, data.classnames, data.templates, 100);
  ASSERT_TRUE(one.ok() && all.ok());
  EXPECT_LT(RelativeError(*one, LoadReferenceTensor("tiny-vit.expected.safetensors",
                                                    "zeroshot_weights")),
            kParityTolerance);
  EXPECT_LT(RelativeError(*all, *one), 1e-5);
}

TEST(ZeroShotTest, FillTemplateReplacesThePlaceholder) {
  EXPECT_EQ(FillTemplate("a photo of a {}.", "dog"), "a photo of a dog.");
  EXPECT_EQ(FillTemplate("{} and {}", "x"), "x and x");
  EXPECT_EQ(FillTemplate(kDefaultTemplate, "red car"), "a photo of a red car.");
}

TEST(ZeroShotTest, RejectsBadInputs) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  auto tokenizer = ClipTokenizer::FromBpeGzip(ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
  ASSERT_TRUE(tokenizer.ok());
  EXPECT_EQ(BuildZeroShotClassifier(*model, **tokenizer, {}, {kDefaultTemplate}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildZeroShotClassifier(*model, **tokenizer, {"dog"}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      BuildZeroShotClassifier(*model, **tokenizer, {"dog"}, {"no placeholder"}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ZeroShotTest, ReadsTemplateFiles) {
  const std::string path = ScratchPath("templates.txt");
  std::ofstream(path) << "# my prompts\na photo of a {}.\n\n  a drawing of a {}.  \n";
  auto templates = ReadTemplateFile(path);
  ASSERT_TRUE(templates.ok()) << templates.status();
  EXPECT_EQ(*templates, (std::vector<std::string>{"a photo of a {}.", "a drawing of a {}."}));
  std::ofstream(path) << "no placeholder here\n";
  EXPECT_EQ(ReadTemplateFile(path).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTemplateFile("/nonexistent/templates.txt").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace oclip::testing
