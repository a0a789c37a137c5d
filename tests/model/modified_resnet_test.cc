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
