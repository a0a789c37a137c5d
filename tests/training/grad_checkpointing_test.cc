// --grad-checkpointing (model/grad_checkpointing.h): on the tiny fixture
// models, every parameter's gradient and one full AdamW step with the
// transformer blocks checkpointed equal those without (fp32, and bf16
// autocast, whose state the recomputation must re-enter); the recomputation
// replays the forward's RNG; the graph really holds one checkpoint node per
// block; evaluation without gradients is unchanged.

#include "model/grad_checkpointing.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>
#include <string>

#include "model/model_loader.h"
#include "tests/model/reference.h"
#include "tests/training/tiny_vit.h"
#include "training/clip_loss.h"
#include "training/optimizer.h"
#include "training/precision.h"

namespace oclip {
namespace {

using testing::LoadReferenceTensor;
using testing::LoadTinyVitForTraining;
using testing::ReferencePath;

// RelativeError, also for gradients that are exactly zero in both runs.
double RelativeError(const torch::Tensor& actual, const torch::Tensor& expected) {
  return torch::equal(actual, expected) ? 0.0 : testing::RelativeError(actual, expected);
}

constexpr char kStepFile[] = "tiny-vit.train_step.safetensors";

torch::Tensor Loss(ClipModel& model, const torch::Tensor& images, const torch::Tensor& tokens,
                   torch::ScalarType autocast = torch::kFloat) {
  namespace F = torch::nn::functional;
  const auto normalize = F::NormalizeFuncOptions().dim(-1);
  AutocastGuard guard(autocast, torch::kCPU);
  torch::Tensor image_features = F::normalize(model.ImageForward(images), normalize);
  torch::Tensor text_features = F::normalize(model.TextForward(tokens), normalize);
  return ClipLoss(image_features, text_features, model.logit_scale().exp(), ClipLossOptions{},
                  nullptr);
}

// Nodes of `root`'s backward graph whose name contains `name`.
int CountNodes(const torch::Tensor& root, const std::string& name) {
  std::set<const torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> stack = {root.grad_fn().get()};
  int count = 0;
  while (!stack.empty()) {
    torch::autograd::Node* node = stack.back();
    stack.pop_back();
    if (node == nullptr || !seen.insert(node).second) continue;
    if (node->name().find(name) != std::string::npos) ++count;
    for (const torch::autograd::Edge& edge : node->next_edges()) stack.push_back(edge.function.get());
  }
  return count;
}

// name -> gradient (undefined for a parameter the loss does not reach).
std::map<std::string, torch::Tensor> Gradients(ClipModel& model) {
  std::map<std::string, torch::Tensor> grads;
  for (const auto& item : model.named_parameters()) {
    const torch::Tensor& grad = item.value().grad();
    grads[item.key()] = grad.defined() ? grad.clone() : torch::Tensor();
  }
  return grads;
}

std::shared_ptr<ClipModel> LoadForTraining(const std::string& fixture) {
  LoadModelOptions options;
  options.model = ReferencePath(fixture + ".json");
  options.pretrained = ReferencePath(fixture + ".safetensors");
  auto model = LoadModel(options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  (*model)->train();
  return *model;
}

// Gradients of the loss on (images, tokens) with and without checkpointing:
// every parameter within `tolerance` relative, and one checkpoint node per
// transformer block (`blocks`) in the checkpointed graph.
void ExpectSameGradients(const std::function<std::shared_ptr<ClipModel>()>& load,
                         const torch::Tensor& images, const torch::Tensor& tokens, int blocks,
                         torch::ScalarType autocast, double tolerance) {
  std::shared_ptr<ClipModel> plain = load(), checkpointed = load();
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(checkpointed, nullptr);
  checkpointed->SetGradCheckpointing(true);
  torch::Tensor plain_loss = Loss(*plain, images, tokens, autocast);
  torch::Tensor checkpointed_loss = Loss(*checkpointed, images, tokens, autocast);
  EXPECT_EQ(CountNodes(plain_loss, "CheckpointFunction"), 0);
  EXPECT_EQ(CountNodes(checkpointed_loss, "CheckpointFunction"), blocks);
  EXPECT_LT(RelativeError(checkpointed_loss.detach(), plain_loss.detach()), 1e-6);
  plain_loss.backward();
  checkpointed_loss.backward();
  const std::map<std::string, torch::Tensor> expected = Gradients(*plain);
  const std::map<std::string, torch::Tensor> actual = Gradients(*checkpointed);
  ASSERT_EQ(actual.size(), expected.size());
  ASSERT_EQ(actual.size(), plain->named_parameters().size());
  int compared = 0;
  for (const auto& [name, grad] : expected) {
    ASSERT_EQ(actual.at(name).defined(), grad.defined()) << name;
    if (!grad.defined()) continue;
    EXPECT_LT(RelativeError(actual.at(name), grad), tolerance) << name;
    ++compared;
  }
  EXPECT_GE(compared, static_cast<int>(expected.size()) - 2) << "nearly every parameter trains";
}

TEST(GradCheckpointingTest, TinyVitGradientsMatchWithoutCheckpointing) {
  // tiny-vit: 2 image blocks + 2 text blocks (asserted through the node count).
  ExpectSameGradients(LoadTinyVitForTraining, LoadReferenceTensor(kStepFile, "images"),
                      LoadReferenceTensor(kStepFile, "tokens"), 4, torch::kFloat, 1e-6);
}

TEST(GradCheckpointingTest, Bf16AutocastIsReenteredInTheRecomputation) {
  // Recomputing in fp32 instead of bf16 would change the gradients by ~1e-2.
  ExpectSameGradients(LoadTinyVitForTraining, LoadReferenceTensor(kStepFile, "images"),
                      LoadReferenceTensor(kStepFile, "tokens"), 4, torch::kBFloat16, 1e-6);
}

TEST(GradCheckpointingTest, HfTextTowerGradientsMatchWithoutCheckpointing) {
  const std::string fixture = "hf/tiny-roberta-vit";
  const std::string expected = fixture + ".expected.safetensors";
  auto load = [&] { return LoadForTraining(fixture); };
  std::shared_ptr<ClipModel> probe = load();
  ASSERT_NE(probe, nullptr);
  const int blocks = probe->config().vision.layers + probe->config().text.hf->num_hidden_layers;
  // As many captions as images (the fixture has 3 images, 14 captions).
  const torch::Tensor images = LoadReferenceTensor(expected, "images");
  const torch::Tensor tokens = LoadReferenceTensor(expected, "tokens").narrow(0, 0, images.size(0));
  ExpectSameGradients(load, images, tokens, blocks, torch::kFloat, 1e-6);
}

TEST(GradCheckpointingTest, OneTrainStepMatchesWithoutCheckpointing) {
  const torch::Tensor images = LoadReferenceTensor(kStepFile, "images");
  const torch::Tensor tokens = LoadReferenceTensor(kStepFile, "tokens");
  std::map<std::string, torch::Tensor> after[2];
  for (bool checkpointing : {false, true}) {
    std::shared_ptr<ClipModel> model = LoadTinyVitForTraining();
    ASSERT_NE(model, nullptr);
    model->SetGradCheckpointing(checkpointing);
    // The trainer's step: AdamW with OpenCLIP's groups, clipping, clamp.
    AdamW optimizer(OpenClipParamGroups(*model, 0.2), AdamWOptions{1e-3, 0.9, 0.98, 1e-6});
    const std::vector<torch::Tensor> parameters = AllParameters(optimizer.groups());
    optimizer.ZeroGrad();
    Loss(*model, images, tokens).backward();
    ClipGradNorm(parameters, 1.0);
    optimizer.Step();
    torch::Tensor logit_scale = model->logit_scale();
    ClampLogitScale(logit_scale);
    for (const auto& item : model->named_parameters()) {
      after[checkpointing][item.key()] = item.value().detach().clone();
    }
  }
  ASSERT_EQ(after[0].size(), after[1].size());
  for (const auto& [name, value] : after[0]) {
    EXPECT_LT(RelativeError(after[1].at(name), value), 1e-6) << name;
  }
}

TEST(GradCheckpointingTest, RecomputationReplaysTheForwardRng) {
  // Dropout inside the checkpointed function: the recomputation must draw
  // the forward's mask, and leave the generator where the forward left it.
  struct Result {
    torch::Tensor grad_x, grad_w, next_random;
  };
  auto run = [](bool checkpoint) {
    torch::manual_seed(11);
    torch::Tensor x = torch::randn({8, 16}).requires_grad_(true);
    torch::Tensor w = torch::randn({16, 16}).requires_grad_(true);
    auto fn = [w](const torch::Tensor& in) { return torch::dropout(in.mm(w), 0.5, true); };
    torch::Tensor y = checkpoint ? CheckpointedForward(fn, x, {w}) : fn(x);
    (y * y).sum().backward();
    return Result{x.grad(), w.grad(), torch::rand({4})};
  };
  const Result plain = run(false), checkpointed = run(true);
  EXPECT_TRUE(torch::equal(checkpointed.grad_x, plain.grad_x));
  EXPECT_TRUE(torch::equal(checkpointed.grad_w, plain.grad_w));
  EXPECT_TRUE(torch::equal(checkpointed.next_random, plain.next_random));
}

TEST(GradCheckpointingTest, FrozenParametersGetNoGradient) {
  torch::Tensor x = torch::randn({3, 4}).requires_grad_(true);
  torch::Tensor trained = torch::randn({4, 4}).requires_grad_(true);
  torch::Tensor frozen = torch::randn({4, 4});
  auto fn = [&](const torch::Tensor& in) { return in.mm(trained).mm(frozen).tanh(); };
  CheckpointedForward(fn, x, {trained, frozen}).sum().backward();
  torch::Tensor x2 = x.detach().clone().requires_grad_(true);
  torch::Tensor trained2 = trained.detach().clone().requires_grad_(true);
  x2.mm(trained2).mm(frozen).tanh().sum().backward();
  EXPECT_FALSE(frozen.grad().defined());
  EXPECT_LT(RelativeError(trained.grad(), trained2.grad()), 1e-6);
  EXPECT_LT(RelativeError(x.grad(), x2.grad()), 1e-6);
}

TEST(GradCheckpointingTest, EvaluationWithoutGradientsIsUnchanged) {
  std::shared_ptr<ClipModel> plain = LoadTinyVitForTraining();
  std::shared_ptr<ClipModel> checkpointed = LoadTinyVitForTraining();
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(checkpointed, nullptr);
  checkpointed->SetGradCheckpointing(true);
  const torch::Tensor images = LoadReferenceTensor(kStepFile, "images");
  const torch::Tensor tokens = LoadReferenceTensor(kStepFile, "tokens");
  torch::NoGradGuard no_grad;
  EXPECT_FALSE(UseGradCheckpointing());
  torch::Tensor image = checkpointed->ImageForward(images);
  EXPECT_FALSE(image.requires_grad());
  EXPECT_TRUE(torch::equal(image, plain->ImageForward(images)));
  EXPECT_TRUE(torch::equal(checkpointed->TextForward(tokens), plain->TextForward(tokens)));
}

}  // namespace
}  // namespace oclip
