// Parity of the HF text towers (roberta-ViT-B-32, xlm-roberta-base-ViT-B-32,
// xlm-roberta-large-ViT-H-14) with Python OpenCLIP + transformers.

#include "model/hf_text_encoder.h"

#include <gtest/gtest.h>

#include "tests/model/parity.h"

namespace oclip::testing {
namespace {

class HfTextEncoderParityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(HfTextEncoderParityTest, FeaturesMatchOpenClip) {
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  ExpectFeaturesMatchReference(*model, GetParam());
}

TEST_P(HfTextEncoderParityTest, PaddingDoesNotChangeFeatures) {
  // Pads are masked out of attention and pooling: a sequence cut right after
  // its last real token gives the same features as the padded one.
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  torch::InferenceMode inference;
  torch::Tensor tokens = FixtureTokens(GetParam()).slice(0, 0, 1);
  const int64_t length = tokens.ne(1).sum().item<int64_t>();
  auto padded = model->EncodeText(tokens);
  auto cut = model->EncodeText(tokens.slice(1, 0, length));
  ASSERT_TRUE(padded.ok() && cut.ok());
  EXPECT_LT(RelativeError(*cut, *padded), 1e-5);
}

TEST_P(HfTextEncoderParityTest, BatchOfShortTextsMatchesOpenClip) {
  // Without the fixture's context-filling text the batch ends at its longest
  // text, and the features must still be those OpenCLIP computed over every
  // position.
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  torch::InferenceMode inference;
  const torch::Tensor tokens = FixtureTokens(GetParam());
  const torch::Tensor short_rows =
      torch::nonzero(tokens.ne(1).sum(-1) < tokens.size(1) / 2).flatten();
  ASSERT_GE(short_rows.size(0), 10);
  ASSERT_LT(short_rows.size(0), tokens.size(0));
  auto features = model->EncodeText(tokens.index_select(0, short_rows));
  ASSERT_TRUE(features.ok()) << features.status();
  const torch::Tensor expected =
      LoadReferenceTensor(std::string(GetParam()) + ".expected.safetensors", "text_features")
          .index_select(0, short_rows);
  EXPECT_LT(RelativeError(*features, expected), kParityTolerance);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, HfTextEncoderParityTest,
                         ::testing::Values("hf/tiny-roberta-vit", "hf/tiny-xlm-roberta-vit"));

}  // namespace
}  // namespace oclip::testing
