// GradScaler (training/grad_scaler.h) on CPU tensors, against
// torch.cuda.amp.GradScaler's documented behaviour: defaults 2^16 / 2 / 0.5 /
// 2000; an inf or NaN gradient skips the step and halves the scale; after
// growth_interval finite steps in a row the scale doubles; unscaled
// gradients equal those of the unscaled loss, unscaled once per step even
// when clipping unscaled them first.

#include "training/grad_scaler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "training/optimizer.h"

namespace oclip {
namespace {

TEST(GradScalerTest, DefaultsAreTorchs) {
  const GradScalerOptions options;
  EXPECT_EQ(options.init_scale, 65536.0);
  EXPECT_EQ(options.growth_factor, 2.0);
  EXPECT_EQ(options.backoff_factor, 0.5);
  EXPECT_EQ(options.growth_interval, 2000);
  EXPECT_EQ(GradScaler().scale(), 65536.0);
}

TEST(GradScalerTest, UnscaledGradientsEqualThoseOfTheUnscaledLoss) {
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({6, 5});
  torch::Tensor w = torch::randn({5, 3}).requires_grad_(true);
  torch::Tensor w2 = w.detach().clone().requires_grad_(true);
  x.mm(w).tanh().sum().backward();
  GradScaler scaler;
  torch::Tensor scaled = scaler.Scale(x.mm(w2).tanh().sum());
  EXPECT_NEAR(scaled.item<double>(), 65536.0 * x.mm(w).tanh().sum().item<double>(),
              1e-6 * std::abs(scaled.item<double>()));
  scaled.backward();
  EXPECT_FALSE(torch::allclose(w2.grad(), w.grad())) << "scaled before Unscale";
  scaler.Unscale({w2});
  scaler.Unscale({w2});  // Once per step: the second call does nothing.
  EXPECT_TRUE(torch::allclose(w2.grad(), w.grad(), 1e-6, 0));
  bool ran = false;
  EXPECT_TRUE(scaler.Step({w2}, [&] { ran = true; }));  // Not unscaled again.
  EXPECT_TRUE(ran);
  EXPECT_TRUE(torch::allclose(w2.grad(), w.grad(), 1e-6, 0));
  scaler.Update();
  EXPECT_EQ(scaler.scale(), 65536.0);
  EXPECT_EQ(scaler.growth_tracker(), 1);
}

TEST(GradScalerTest, AnAdamWStepThroughTheScalerEqualsThePlainOne) {
  torch::manual_seed(2);
  const torch::Tensor x = torch::randn({8, 4});
  torch::Tensor a = torch::randn({4, 4}).requires_grad_(true);
  torch::Tensor b = a.detach().clone().requires_grad_(true);
  const AdamWOptions options{1e-2, 0.9, 0.98, 1e-6};
  AdamW plain({ParamGroup{{{"w", a}}, 0.2}}, options);
  AdamW scaled({ParamGroup{{{"w", b}}, 0.2}}, options);
  GradScaler scaler;
  for (int step = 0; step < 3; ++step) {
    plain.ZeroGrad();
    scaled.ZeroGrad();
    x.mm(a).sin().sum().backward();
    ClipGradNorm({a}, 0.5);
    plain.Step();
    scaler.Scale(x.mm(b).sin().sum()).backward();
    scaler.Unscale({b});  // Unscale before clipping, as OpenCLIP does.
    ClipGradNorm({b}, 0.5);
    EXPECT_TRUE(scaler.Step({b}, [&] { scaled.Step(); }));
    scaler.Update();
  }
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-6);
}

TEST(GradScalerTest, NonFiniteGradientSkipsTheStepAndHalvesTheScale) {
  for (const float bad : {std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN()}) {
    GradScalerOptions options;
    options.growth_interval = 3;
    GradScaler scaler(options);
    torch::Tensor w = torch::ones({3}).requires_grad_(true);
    torch::Tensor v = torch::ones({2}).requires_grad_(true);
    // Two good steps, then an injected inf/NaN in one parameter's gradient.
    for (int step = 0; step < 2; ++step) {
      w.mutable_grad() = torch::ones({3});
      v.mutable_grad() = torch::ones({2});
      EXPECT_TRUE(scaler.Step({w, v}, [] {}));
      scaler.Update();
    }
    EXPECT_EQ(scaler.growth_tracker(), 2);
    w.mutable_grad() = torch::ones({3});
    v.mutable_grad() = torch::tensor({1.0f, bad});
    bool ran = false;
    EXPECT_FALSE(scaler.Step({w, v}, [&] { ran = true; })) << bad;
    EXPECT_FALSE(ran) << bad;
    scaler.Update();
    EXPECT_EQ(scaler.scale(), 32768.0) << bad;
    EXPECT_EQ(scaler.growth_tracker(), 0) << "a skipped step restarts the growth count";
    // Back to good gradients: the step runs again.
    v.mutable_grad() = torch::ones({2});
    EXPECT_TRUE(scaler.Step({w, v}, [&] { ran = true; }));
    EXPECT_TRUE(ran);
  }
}

TEST(GradScalerTest, ScaleGrowsAfterGrowthIntervalFiniteSteps) {
  GradScalerOptions options;
  options.init_scale = 1024;
  options.growth_interval = 4;
  GradScaler scaler(options);
  torch::Tensor w = torch::ones({2}).requires_grad_(true);
  for (int step = 1; step <= 8; ++step) {
    w.mutable_grad() = torch::ones({2});
    EXPECT_TRUE(scaler.Step({w}, [] {}));
    scaler.Update();
    // 1024 for steps 1-3, 2048 after the 4th, 4096 after the 8th.
    EXPECT_EQ(scaler.scale(), step < 4 ? 1024.0 : step < 8 ? 2048.0 : 4096.0) << step;
  }
  GradScalerOptions off = options;
  off.enabled = false;
  GradScaler disabled(off);
  const torch::Tensor loss = torch::tensor(3.0f);
  EXPECT_TRUE(torch::equal(disabled.Scale(loss), loss));
  w.mutable_grad() = torch::full({2}, std::numeric_limits<float>::infinity());
  bool ran = false;
  EXPECT_TRUE(disabled.Step({w}, [&] { ran = true; })) << "a disabled scaler always steps";
  EXPECT_TRUE(ran);
}

}  // namespace
}  // namespace oclip
