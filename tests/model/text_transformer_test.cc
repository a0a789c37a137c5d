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
  // The batch ends at its longest caption's <end_of_text>; OpenCLIP computed
  // every position.
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  ExpectShortTextsMatchReference(*model, GetParam(), FixtureTokens(GetParam()).argmax(-1) + 1);
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
