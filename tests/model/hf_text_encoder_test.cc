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
  // The batch ends at its longest text's last real token; OpenCLIP computed
  // every position.
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  ExpectShortTextsMatchReference(*model, GetParam(), FixtureTokens(GetParam()).ne(1).sum(-1));
}

INSTANTIATE_TEST_SUITE_P(TinyModels, HfTextEncoderParityTest,
                         ::testing::Values("hf/tiny-roberta-vit", "hf/tiny-xlm-roberta-vit"));

}  // namespace
}  // namespace oclip::testing
