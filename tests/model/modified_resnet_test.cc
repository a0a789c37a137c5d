// Parity of the ModifiedResNet family (RN50, RN101, RN50x4/16/64) with Python
// OpenCLIP on the tiny fixture.

#include "model/modified_resnet.h"

#include <gtest/gtest.h>

#include "tests/model/parity.h"

namespace oclip::testing {
namespace {

TEST(ModifiedResNetTest, ImageFeaturesMatchOpenClip) {
  auto model = LoadFixtureModel("tiny-rn");
  ASSERT_NE(model, nullptr);
  ExpectImageFeaturesMatchReference(*model, "tiny-rn");
}

TEST(ModifiedResNetTest, BatchLargerThanTheEvalChunkMatchesOpenClip) {
  // Eval mode runs 8 images at a time: a batch of 3 chunks, the last one
  // partial, must give every image OpenCLIP's features, in order.
  auto model = LoadFixtureModel("tiny-rn");
  ASSERT_NE(model, nullptr);
  const torch::Tensor images = LoadReferenceTensor("tiny-rn.expected.safetensors", "images");
  const torch::Tensor expected =
      LoadReferenceTensor("tiny-rn.expected.safetensors", "image_features");
  const int64_t count = 19;
  const torch::Tensor order = torch::arange(count, torch::kLong).remainder(images.size(0));
  torch::InferenceMode inference;
  auto features = model->EncodeImage(images.index_select(0, order));
  ASSERT_TRUE(features.ok()) << features.status();
  ASSERT_EQ(features->size(0), count);
  EXPECT_LT(RelativeError(*features, expected.index_select(0, order)), kParityTolerance);
}

TEST(ModifiedResNetTest, EvalModeUsesRunningStatistics) {
  // In train mode BatchNorm uses batch statistics: the outputs must differ,
  // or the running statistics were never read.
  auto model = LoadFixtureModel("tiny-rn");
  ASSERT_NE(model, nullptr);
  torch::Tensor images = LoadReferenceTensor("tiny-rn.expected.safetensors", "images");
  torch::Tensor expected = LoadReferenceTensor("tiny-rn.expected.safetensors", "image_features");
  torch::NoGradGuard no_grad;
  model->train();
  torch::Tensor train_features = model->ImageForward(images);
  EXPECT_GT(RelativeError(train_features, expected), 1e-3);
}

}  // namespace
}  // namespace oclip::testing
