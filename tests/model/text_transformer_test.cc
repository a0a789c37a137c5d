// Parity of OpenCLIP's native text tower (causal transformer, end-of-text
// pooling) with Python OpenCLIP on the tiny fixtures of every family.

#include "model/text_transformer.h"

#include <gtest/gtest.h>

#include "tests/model/parity.h"

namespace oclip::testing {
namespace {

class TextTransformerParityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TextTransformerParityTest, TextFeaturesMatchOpenClip) {
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  ExpectTextFeaturesMatchReference(*model, GetParam());
}

TEST_P(TextTransformerParityTest, BatchOfShortTextsMatchesOpenClip) {
  // The fixture's batch holds a text that fills the context, so the tower
  // computes all 77 positions there. Without it the batch ends at its longest
  // caption's <end_of_text>, and the features must still be OpenCLIP's, which
  // computed every position.
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  torch::InferenceMode inference;
  const torch::Tensor tokens = FixtureTokens(GetParam());
  const torch::Tensor short_rows =
      torch::nonzero(tokens.argmax(-1) < tokens.size(1) / 2).flatten();
  ASSERT_GE(short_rows.size(0), 10);
  ASSERT_LT(short_rows.size(0), tokens.size(0));
  auto features = model->EncodeText(tokens.index_select(0, short_rows));
  ASSERT_TRUE(features.ok()) << features.status();
  const torch::Tensor expected =
      LoadReferenceTensor(std::string(GetParam()) + ".expected.safetensors", "text_features")
          .index_select(0, short_rows);
  EXPECT_LT(RelativeError(*features, expected), kParityTolerance);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, TextTransformerParityTest,
                         ::testing::Values("tiny-vit", "tiny-vit-quickgelu", "tiny-vit-h",
                                           "tiny-rn"));

TEST(TextTransformerTest, PaddingAfterTheEndTokenDoesNotChangeFeatures) {
  // The causal mask hides everything after a token from it, so cutting the
  // zero padding after <end_of_text> gives the same features.
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  torch::InferenceMode inference;
  torch::Tensor tokens = FixtureTokens("tiny-vit").slice(0, 0, 1);
  const int64_t length = tokens.argmax(-1).item<int64_t>() + 1;
  auto padded = model->EncodeText(tokens);
  auto cut = model->EncodeText(tokens.slice(1, 0, length));
  ASSERT_TRUE(padded.ok() && cut.ok());
  EXPECT_LT(RelativeError(*cut, *padded), 1e-5);
}

TEST(TextTransformerTest, RejectsTokensOutsideTheVocabulary) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  auto too_large = model->EncodeText(torch::full({1, 77}, 49408, torch::kLong));
  EXPECT_EQ(too_large.status().code(), absl::StatusCode::kInvalidArgument);
  auto too_long = model->EncodeText(torch::zeros({1, 78}, torch::kLong));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  auto wrong_type = model->EncodeText(torch::zeros({1, 77}, torch::kFloat));
  EXPECT_EQ(wrong_type.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip::testing
