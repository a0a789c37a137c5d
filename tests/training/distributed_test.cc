// Data parallelism over real Gloo process groups on loopback: two ranks (two
// threads, each with its own TCPStore client and ProcessGroupGloo) each take
// half of the reference batch, and their averaged gradients and AdamW update
// are compared with one process taking the whole batch. Also the collectives
// themselves and the torchrun/SLURM environment rules.

#include "training/distributed.h"

#include <gtest/gtest.h>

#include <future>
#include <map>
#include <string>
#include <thread>

#include "model/model_loader.h"
#include "tests/model/reference.h"
#include "tests/training/tiny_vit.h"
#include "training/clip_loss.h"
#include "training/optimizer.h"

namespace oclip {
namespace {

using testing::LoadReferenceTensor;
using testing::LoadTinyVitForTraining;
using testing::ReferencePath;
using testing::RelativeError;

constexpr char kStepFile[] = "tiny-vit.train_step.safetensors";

// Runs fn(rank, communicator) on `world` threads joined in one Gloo group.
void RunRanks(int world, const std::function<void(int, Communicator&)>& fn) {
  StoreOptions server;
  server.port = 0;
  server.is_server = true;
  server.world_size = world;
  auto server_store = ConnectStore(server);
  ASSERT_TRUE(server_store.ok()) << server_store.status();
  const int port = StorePort(**server_store);
  ASSERT_GT(port, 0);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      c10::intrusive_ptr<c10d::Store> store = *server_store;
      if (rank > 0) {
        StoreOptions client;
        client.port = port;
        client.world_size = world;
        auto connected = ConnectStore(client);
        ASSERT_TRUE(connected.ok()) << connected.status();
        store = *connected;
      }
      auto communicator = GlooCommunicator::Create(store, rank, world);
      ASSERT_TRUE(communicator.ok()) << communicator.status();
      fn(rank, **communicator);
    });
  }
  for (auto& t : threads) t.join();
}

struct StepResult {
  std::map<std::string, torch::Tensor> grads;
  std::map<std::string, torch::Tensor> params;
};

// One training step (loss, backward, DDP averaging, AdamW, clamp) on rows
// [begin, begin + count) of the reference batch; `grad_scale` multiplies the
// gradients of the towers (not logit_scale's) before the optimizer, to state
// a known factor exactly.
StepResult Step(int64_t begin, int64_t count, Communicator* communicator,
                const ClipLossOptions& loss_options, double grad_scale = 1.0) {
  namespace F = torch::nn::functional;
  StepResult result;
  std::shared_ptr<ClipModel> model = LoadTinyVitForTraining();
  if (model == nullptr) return result;
  const torch::Tensor images = LoadReferenceTensor(kStepFile, "images").narrow(0, begin, count);
  const torch::Tensor tokens = LoadReferenceTensor(kStepFile, "tokens").narrow(0, begin, count);
  AdamW optimizer(OpenClipParamGroups(*model, 0.2), AdamWOptions{1e-3, 0.9, 0.98, 1e-6});
  if (communicator != nullptr) BroadcastModule(*model, *communicator);
  const auto normalize = F::NormalizeFuncOptions().dim(-1);
  torch::Tensor loss = ClipLoss(F::normalize(model->ImageForward(images), normalize),
                                F::normalize(model->TextForward(tokens), normalize),
                                model->logit_scale().exp(), loss_options, communicator);
  loss.backward();
  const std::vector<torch::Tensor> params = AllParameters(optimizer.groups());
  if (communicator != nullptr) AverageGradients(params, *communicator, /*bucket_bytes=*/64 << 10);
  for (const auto& item : model->named_parameters()) {
    if (item.key() != "logit_scale") item.value().mutable_grad().mul_(grad_scale);
    result.grads[item.key()] = item.value().grad().clone();
  }
  optimizer.Step();
  torch::Tensor scale = model->logit_scale();
  ClampLogitScale(scale);
  for (const auto& item : model->named_parameters()) {
    result.params[item.key()] = item.value().detach().clone();
  }
  return result;
}

// Gradients within `tolerance` (relative, per tensor); parameters after the
// AdamW step within `tolerance` where |g| >= 10·eps, and within lr/10 where
// the update lr·g/(|g| + eps) amplifies float32 rounding noise (see
// train_step_test.cc: e.g. attention key biases, whose exact gradient is 0).
void ExpectSameStep(const StepResult& actual, const StepResult& expected, double tolerance) {
  ASSERT_EQ(actual.params.size(), expected.params.size());
  for (const auto& [name, grad] : expected.grads) {
    EXPECT_LT(RelativeError(actual.grads.at(name), grad), tolerance) << "gradient of " << name;
  }
  for (const auto& [name, param] : expected.params) {
    const torch::Tensor stable = expected.grads.at(name).reshape(-1).abs() >= 1e-5;
    const torch::Tensor a = actual.params.at(name).reshape(-1), e = param.reshape(-1);
    EXPECT_LT(RelativeError(a.masked_select(stable), e.masked_select(stable)), tolerance) << name;
    if (stable.logical_not().any().item<bool>()) {
      EXPECT_LT((a - e).masked_select(stable.logical_not()).abs().max().item<double>(), 1e-4)
          << name;
    }
  }
}

// Two ranks x 2 samples vs one process x 4 samples, for one loss variant;
// `single_grad_scale` is the factor OpenCLIP's averaged gradient carries
// relative to the one-process gradient (clip_loss.h).
void CheckTwoRanksMatchOne(const ClipLossOptions& options, double single_grad_scale) {
  const StepResult single = Step(0, 4, nullptr, {}, single_grad_scale);
  std::vector<StepResult> ranks(2);
  RunRanks(2, [&](int rank, Communicator& communicator) {
    ranks[rank] = Step(2 * rank, 2, &communicator, options);
  });
  ExpectSameStep(ranks[0], single, 1e-5);
  ExpectSameStep(ranks[1], single, 1e-5);
}

TEST(DataParallelTest, LocalLossGatherWithGradMatchesOneProcess) {
  CheckTwoRanksMatchOne({/*local_loss=*/true, /*gather_with_grad=*/true}, 1.0);
}

TEST(DataParallelTest, GlobalLossGatherWithGradMatchesOneProcess) {
  CheckTwoRanksMatchOne({/*local_loss=*/false, /*gather_with_grad=*/true}, 1.0);
}

TEST(DataParallelTest, DefaultLossMatchesOneProcessOverWorldSize) {
  // Without gather_with_grad each rank's gradient flows through its own
  // samples only; DDP's average is then 1/world of the whole-batch gradient
  // for the towers. logit_scale sees the whole loss on every rank, so its
  // average is the whole-batch gradient.
  CheckTwoRanksMatchOne({/*local_loss=*/false, /*gather_with_grad=*/false}, 0.5);
}

TEST(GlooCommunicatorTest, CollectivesOverLoopback) {
  std::vector<std::vector<float>> gathered(3), reduced(3), broadcast(3);
  RunRanks(3, [&](int rank, Communicator& communicator) {
    EXPECT_EQ(communicator.rank(), rank);
    EXPECT_EQ(communicator.world_size(), 3);
    std::vector<torch::Tensor> parts = communicator.AllGather(torch::full({2}, float(rank)));
    for (const auto& p : parts) gathered[rank].push_back(p[0].item<float>());
    std::vector<torch::Tensor> sum = {torch::full({1}, float(rank + 1))};
    communicator.AllReduceSum(sum);
    reduced[rank].push_back(sum[0].item<float>());
    std::vector<torch::Tensor> b = {torch::full({1}, float(10 * rank))};
    communicator.Broadcast(b, 2);
    broadcast[rank].push_back(b[0].item<float>());
    communicator.Barrier();
  });
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_EQ(gathered[rank], (std::vector<float>{0, 1, 2}));
    EXPECT_EQ(reduced[rank], (std::vector<float>{6}));
    EXPECT_EQ(broadcast[rank], (std::vector<float>{20}));
  }
}

TEST(AllGatherWithGradTest, BackwardSumsOverRanksAndReturnsOwnSlice) {
  std::vector<torch::Tensor> grads(2);
  RunRanks(2, [&](int rank, Communicator& communicator) {
    torch::Tensor x = torch::full({1, 2}, float(rank + 1), torch::requires_grad());
    torch::Tensor all = AllGatherWithGrad(x, communicator);
    EXPECT_EQ(all.size(0), 2);
    // d/dx of sum(all * weight) on rank r: weight row r, summed over ranks.
    const torch::Tensor weight = torch::tensor({{1.0f, 2.0f}, {3.0f, 4.0f}}) * float(rank + 1);
    (all * weight).sum().backward();
    grads[rank] = x.grad().clone();
  });
  // Sum over ranks of weight (factor 1 + 2 = 3), row of each rank.
  EXPECT_TRUE(torch::equal(grads[0], torch::tensor({{3.0f, 6.0f}})));
  EXPECT_TRUE(torch::equal(grads[1], torch::tensor({{9.0f, 12.0f}})));
}

TEST(AverageGradientsTest, SplitsIntoBucketsAndFillsMissingGradients) {
  std::vector<std::vector<torch::Tensor>> results(2);
  RunRanks(2, [&](int rank, Communicator& communicator) {
    std::vector<torch::Tensor> params;
    for (int i = 0; i < 5; ++i) params.push_back(torch::zeros({300}, torch::requires_grad()));
    for (int i = 0; i < 5; ++i) {
      if (rank == 1 && i == 3) continue;  // No gradient on one rank.
      params[i].mutable_grad() = torch::full({300}, float(i + 10 * rank));
    }
    AverageGradients(params, communicator, /*bucket_bytes=*/2 * 300 * 4);
    for (auto& p : params) results[rank].push_back(p.grad().clone());
  });
  for (int rank = 0; rank < 2; ++rank) {
    for (int i = 0; i < 5; ++i) {
      const float expected = i == 3 ? 3.0f / 2 : (i + (i + 10.0f)) / 2;
      EXPECT_TRUE(torch::allclose(results[rank][i], torch::full({300}, expected)))
          << "rank " << rank << " param " << i;
    }
  }
}

std::function<const char*(const char*)> Env(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST(DistributedEnvTest, TorchrunVariables) {
  auto env = DetectDistributedEnv(Env({{"WORLD_SIZE", "4"},
                                       {"RANK", "3"},
                                       {"LOCAL_RANK", "1"},
                                       {"MASTER_ADDR", "node0"},
                                       {"MASTER_PORT", "1234"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_TRUE(env->distributed);
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->world_size, 4);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->master_addr, "node0");
  EXPECT_EQ(env->master_port, 1234);
}

TEST(DistributedEnvTest, SlurmVariables) {
  auto env = DetectDistributedEnv(
      Env({{"SLURM_NTASKS", "8"}, {"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"}}));
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_TRUE(env->distributed);
  EXPECT_EQ(env->rank, 5);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->master_port, 29500);
}

TEST(DistributedEnvTest, SingleProcessAndBadValues) {
  auto single = DetectDistributedEnv(Env({}));
  ASSERT_TRUE(single.ok());
  EXPECT_FALSE(single->distributed);
  EXPECT_EQ(single->world_size, 1);
  EXPECT_EQ(DetectDistributedEnv(Env({{"WORLD_SIZE", "two"}})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DetectDistributedEnv(Env({{"WORLD_SIZE", "2"}, {"RANK", "2"}})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
