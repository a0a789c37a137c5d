// One OpenCLIP training step against Python's: ClipLoss, the global gradient
// norm, AdamW with OpenCLIP's parameter groups, and the logit_scale clamp,
// compared with ../shared/reference/tiny-vit.train_step.safetensors. Also the
// LR schedules against their formulas and the optimiser's building blocks.

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/safetensors.h"
#include "model/model_loader.h"
#include "tests/model/reference.h"
#include "tests/training/tiny_vit.h"
#include "training/clip_loss.h"
#include "training/lr_schedule.h"
#include "training/optimizer.h"

namespace oclip {
namespace {

using testing::LoadReferenceTensor;
using testing::LoadTinyVitForTraining;
using testing::ReferencePath;
using testing::RelativeError;

constexpr char kStepFile[] = "tiny-vit.train_step.safetensors";

double MetadataDouble(const std::map<std::string, std::string>& metadata, const std::string& key,
                      int index = 0) {
  auto it = metadata.find(key);
  EXPECT_NE(it, metadata.end()) << key;
  if (it == metadata.end()) return NAN;
  std::vector<std::string> parts = absl::StrSplit(it->second, ',');
  double value = NAN;
  EXPECT_TRUE(absl::SimpleAtod(parts.at(index), &value)) << it->second;
  return value;
}

torch::Tensor Forward(ClipModel& model, const torch::Tensor& images, const torch::Tensor& tokens,
                      Communicator* communicator, const ClipLossOptions& loss_options = {}) {
  namespace F = torch::nn::functional;
  const auto normalize = F::NormalizeFuncOptions().dim(-1);
  torch::Tensor image_features = F::normalize(model.ImageForward(images), normalize);
  torch::Tensor text_features = F::normalize(model.TextForward(tokens), normalize);
  return ClipLoss(image_features, text_features, model.logit_scale().exp(), loss_options,
                  communicator);
}

TEST(TrainStepTest, OneStepMatchesOpenClip) {
  auto reader = SafetensorsReader::Open(ReferencePath(kStepFile));
  ASSERT_TRUE(reader.ok()) << reader.status();
  const auto& metadata = (*reader)->metadata();
  AdamWOptions adamw;
  adamw.lr = MetadataDouble(metadata, "lr");
  adamw.beta1 = MetadataDouble(metadata, "betas", 0);
  adamw.beta2 = MetadataDouble(metadata, "betas", 1);
  adamw.eps = MetadataDouble(metadata, "eps");
  const double weight_decay = MetadataDouble(metadata, "weight_decay");

  std::shared_ptr<ClipModel> model = LoadTinyVitForTraining();
  ASSERT_NE(model, nullptr);
  const torch::Tensor images = LoadReferenceTensor(kStepFile, "images");
  const torch::Tensor tokens = LoadReferenceTensor(kStepFile, "tokens");

  AdamW optimizer(OpenClipParamGroups(*model, weight_decay), adamw);
  optimizer.ZeroGrad();
  torch::Tensor loss = Forward(*model, images, tokens, nullptr);
  loss.backward();
  // Gradients and values before the step, to tell well-conditioned elements
  // of the update from ill-conditioned ones (below).
  std::map<std::string, torch::Tensor> grads;
  for (const auto& item : model->named_parameters()) {
    grads[item.key()] = item.value().grad().detach().clone();
  }
  const double grad_norm = GradNorm(AllParameters(optimizer.groups()));
  optimizer.Step();
  torch::Tensor logit_scale = model->logit_scale();
  ClampLogitScale(logit_scale);

  const double expected_loss = LoadReferenceTensor(kStepFile, "loss").item<double>();
  const double expected_norm = LoadReferenceTensor(kStepFile, "grad_norm").item<double>();
  EXPECT_NEAR(loss.item<double>(), expected_loss, 1e-5 * std::abs(expected_loss));
  EXPECT_NEAR(grad_norm, expected_norm, 1e-5 * std::abs(expected_norm));

  // AdamW's first update is lr·g/(|g| + eps): where |g| is near eps (1e-6) it
  // amplifies float32 rounding noise of the gradient, which differs between
  // any two implementations (e.g. the key bias of attention has a gradient
  // that is exactly zero in exact arithmetic, ~1e-9 in float32). Elements with
  // |g| >= 10·eps are compared at 1e-5 relative per tensor; the others, a
  // small fraction, must still move by the same amount within lr/10.
  const double kWellConditioned = 10 * adamw.eps;
  int compared = 0;
  int64_t ill_conditioned = 0, total = 0;
  for (const auto& item : model->named_parameters()) {
    const std::string key = "after/" + item.key();
    ASSERT_TRUE((*reader)->Contains(key)) << key;
    const torch::Tensor actual = item.value().detach().reshape(-1);
    const torch::Tensor expected = LoadReferenceTensor(kStepFile, key).reshape(-1);
    ASSERT_EQ(actual.numel(), expected.numel()) << key;
    const torch::Tensor stable = grads[item.key()].reshape(-1).abs() >= kWellConditioned;
    const torch::Tensor unstable = stable.logical_not();
    EXPECT_LT(RelativeError(actual.masked_select(stable), expected.masked_select(stable)), 1e-5)
        << key;
    if (unstable.any().item<bool>()) {
      EXPECT_LT((actual.masked_select(unstable) - expected.masked_select(unstable))
                    .abs()
                    .max()
                    .item<double>(),
                adamw.lr / 10)
          << key;
    }
    // The rows of tokens absent from the 4 captions have zero gradient and
    // would swamp the count.
    if (item.key() != "token_embedding.weight") {
      ill_conditioned += unstable.sum().item<int64_t>();
      total += actual.numel();
    }
    ++compared;
  }
  EXPECT_LT(static_cast<double>(ill_conditioned) / total, 0.05)
      << ill_conditioned << " of " << total << " elements have |grad| < 10 eps";
  EXPECT_EQ(compared, static_cast<int>(model->named_parameters().size()));
  EXPECT_GT(compared, 50);
}

TEST(TrainStepTest, LibTorchAdamWComputesTheSameUpdate) {
  // optimizer.h claims LibTorch's AdamW uses PyTorch's formula; both must
  // agree over several steps with weight decay.
  torch::manual_seed(3);
  torch::Tensor a = torch::randn({5, 7}).requires_grad_(true);
  torch::Tensor b = a.detach().clone().requires_grad_(true);
  AdamWOptions options{1e-2, 0.9, 0.98, 1e-6};
  AdamW ours({ParamGroup{{{"w", a}}, 0.2}}, options);
  torch::optim::AdamW theirs(
      {b}, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.98}).eps(1e-6).weight_decay(0.2));
  for (int step = 0; step < 4; ++step) {
    const torch::Tensor grad = torch::randn({5, 7});
    a.mutable_grad() = grad.clone();
    b.mutable_grad() = grad.clone();
    ours.Step();
    theirs.step();
  }
  EXPECT_LT(RelativeError(a.detach(), b.detach()), 1e-6);
}

TEST(ParamGroupsTest, FollowsOpenClipExclusions) {
  std::shared_ptr<ClipModel> model = LoadTinyVitForTraining();
  ASSERT_NE(model, nullptr);
  const std::vector<ParamGroup> groups = OpenClipParamGroups(*model, 0.2);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].weight_decay, 0.0);
  EXPECT_EQ(groups[1].weight_decay, 0.2);
  std::set<std::string> no_decay, decay;
  for (const auto& p : groups[0].params) no_decay.insert(p.name);
  for (const auto& p : groups[1].params) decay.insert(p.name);
  EXPECT_EQ(no_decay.size() + decay.size(), model->named_parameters().size());
  for (const char* name : {"logit_scale", "visual.class_embedding", "visual.ln_pre.weight",
                           "ln_final.bias", "visual.transformer.resblocks.0.attn.in_proj_bias"}) {
    EXPECT_TRUE(no_decay.count(name)) << name;
  }
  for (const char* name : {"positional_embedding", "visual.positional_embedding",
                           "token_embedding.weight", "text_projection", "visual.proj",
                           "visual.conv1.weight", "transformer.resblocks.1.mlp.c_fc.weight"}) {
    EXPECT_TRUE(decay.count(name)) << name;
  }
}

TEST(ClipGradNormTest, ScalesToTheLimitAndReportsTheNormBefore) {
  torch::Tensor a = torch::zeros({2}, torch::requires_grad());
  torch::Tensor b = torch::zeros({1}, torch::requires_grad());
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  EXPECT_NEAR(ClipGradNorm({a, b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(GradNorm({a, b}), 1.0, 1e-5);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 / (5.0 + 1e-6), 1e-6);
  // Below the limit nothing changes.
  EXPECT_NEAR(ClipGradNorm({a, b}, 10.0), 1.0, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 / (5.0 + 1e-6), 1e-6);
}

TEST(ClampLogitScaleTest, ClampsToZeroAndLogHundred) {
  torch::Tensor s = torch::tensor(7.0f, torch::requires_grad());
  ClampLogitScale(s);
  EXPECT_NEAR(s.item<double>(), std::log(100.0), 1e-6);
  torch::Tensor t = torch::tensor(-1.0f, torch::requires_grad());
  ClampLogitScale(t);
  EXPECT_EQ(t.item<double>(), 0.0);
}

TEST(LrScheduleTest, CosineWithWarmup) {
  LrScheduleOptions o;
  o.scheduler = LrScheduler::kCosine;
  o.base_lr = 1e-3;
  o.warmup_steps = 10;
  o.total_steps = 110;
  EXPECT_DOUBLE_EQ(LearningRate(o, 0), 1e-3 * 1 / 10);
  EXPECT_DOUBLE_EQ(LearningRate(o, 9), 1e-3);
  EXPECT_DOUBLE_EQ(LearningRate(o, 10), 1e-3);  // cos(0)
  EXPECT_NEAR(LearningRate(o, 35), 0.5 * (1 + std::cos(M_PI * 25 / 100)) * 1e-3, 1e-15);
  EXPECT_NEAR(LearningRate(o, 60), 0.5e-3, 1e-15);
  EXPECT_NEAR(LearningRate(o, 110), 0.0, 1e-15);
}

TEST(LrScheduleTest, ConstAndConstCooldown) {
  LrScheduleOptions o;
  o.base_lr = 2e-3;
  o.warmup_steps = 4;
  o.total_steps = 100;
  o.scheduler = LrScheduler::kConst;
  EXPECT_DOUBLE_EQ(LearningRate(o, 1), 2e-3 * 2 / 4);
  EXPECT_DOUBLE_EQ(LearningRate(o, 99), 2e-3);
  o.scheduler = LrScheduler::kConstCooldown;
  o.cooldown_steps = 20;
  o.cooldown_end_lr = 1e-4;
  o.cooldown_power = 2.0;
  EXPECT_DOUBLE_EQ(LearningRate(o, 79), 2e-3);
  EXPECT_DOUBLE_EQ(LearningRate(o, 80), 2e-3);  // e = 0
  EXPECT_NEAR(LearningRate(o, 90), std::pow(1 - 10.0 / 20, 2.0) * (2e-3 - 1e-4) + 1e-4, 1e-15);
  EXPECT_NEAR(LearningRate(o, 99), std::pow(1 - 19.0 / 20, 2.0) * (2e-3 - 1e-4) + 1e-4, 1e-15);
}

TEST(LrScheduleTest, ParsesOpenClipNames) {
  EXPECT_EQ(*ParseLrScheduler("const-cooldown"), LrScheduler::kConstCooldown);
  EXPECT_EQ(ParseLrScheduler("linear").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
