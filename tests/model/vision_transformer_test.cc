// Parity of the VisionTransformer image tower (ViT-B/L/H/g and their
// -quickgelu variants) with Python OpenCLIP on the tiny fixtures.

#include "model/vision_transformer.h"

#include <gtest/gtest.h>

#include "tests/model/parity.h"

namespace oclip::testing {
namespace {

class VisionTransformerParityTest : public ::testing::TestWithParam<const char*> {};

TEST_P(VisionTransformerParityTest, ImageFeaturesMatchOpenClip) {
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  ExpectImageFeaturesMatchReference(*model, GetParam());
}

TEST_P(VisionTransformerParityTest, LogitScaleMatchesOpenClip) {
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  torch::Tensor expected =
      LoadReferenceTensor(std::string(GetParam()) + ".expected.safetensors", "logit_scale");
  EXPECT_NEAR(model->logit_scale().item<double>(), expected.item<double>(), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, VisionTransformerParityTest,
                         ::testing::Values("tiny-vit", "tiny-vit-quickgelu", "tiny-vit-h"));

TEST(VisionTransformerTest, QuickGeluConfigChangesTheActivation) {
  // The same weights under the wrong activation must not pass the gate: the
  // parity test above would otherwise be blind to the GELU/QuickGELU trap.
  auto model = LoadFixtureModel("tiny-vit", "tiny-vit-quickgelu.safetensors");
  ASSERT_NE(model, nullptr);
  torch::InferenceMode inference;
  auto features = model->EncodeImage(
      LoadReferenceTensor("tiny-vit-quickgelu.expected.safetensors", "images"));
  ASSERT_TRUE(features.ok());
  EXPECT_GT(RelativeError(*features, LoadReferenceTensor("tiny-vit-quickgelu.expected.safetensors",
                                                         "image_features")),
            1e-3);
}

TEST(VisionTransformerTest, NormalizedFeaturesHaveUnitNorm) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  torch::InferenceMode inference;
  auto features = model->EncodeImage(
      LoadReferenceTensor("tiny-vit.expected.safetensors", "images"), /*normalize=*/true);
  ASSERT_TRUE(features.ok());
  torch::Tensor raw = LoadReferenceTensor("tiny-vit.expected.safetensors", "image_features");
  torch::Tensor expected = raw / raw.norm(2, -1, true);
  EXPECT_LT(RelativeError(*features, expected), kParityTolerance);
}

TEST(VisionTransformerTest, RejectsImagesOfTheWrongSize) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  auto features = model->EncodeImage(torch::zeros({1, 3, 32, 32}));
  EXPECT_EQ(features.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(features.status().message().find("[N, 3, 64, 64]"), std::string::npos)
      << features.status();
}

}  // namespace
}  // namespace oclip::testing
