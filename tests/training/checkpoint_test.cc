// Training checkpoints: the model file loads as `--pretrained` (OpenCLIP key
// names), the state file restores AdamW exactly, `latest` picks the newest
// complete pair, and a half-written pair is refused.

#include "training/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "model/model_loader.h"
#include "tests/core/scratch_dir.h"
#include "tests/model/reference.h"
#include "training/optimizer.h"

namespace oclip {
namespace {

using testing::ReferencePath;
using testing::ScratchPath;

std::shared_ptr<ClipModel> LoadTinyVit(const std::string& pretrained) {
  LoadModelOptions options;
  options.model = ReferencePath("tiny-vit.json");
  options.pretrained = pretrained;
  auto model = LoadModel(options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

// One AdamW step on a fixed pseudo-gradient so the optimizer has state.
void FakeStep(ClipModel& model, AdamW& optimizer, float value) {
  for (auto& p : model.parameters()) p.mutable_grad() = torch::full_like(p, value);
  optimizer.Step();
}

TEST(CheckpointTest, RoundTripRestoresModelAndOptimizer) {
  const std::string dir = ScratchPath("ckpt_roundtrip");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  auto model = LoadTinyVit(ReferencePath("tiny-vit.safetensors"));
  ASSERT_NE(model, nullptr);
  AdamW optimizer(OpenClipParamGroups(*model, 0.2), AdamWOptions{1e-3, 0.9, 0.98, 1e-6});
  FakeStep(*model, optimizer, 0.5f);
  ASSERT_TRUE(
      SaveTrainingCheckpoint(dir, "epoch_1", *model, optimizer, {1, 7, "run", "tiny"}).ok());

  // The model file is a plain OpenCLIP state dict: it loads as --pretrained.
  auto reloaded = LoadTinyVit(ModelCheckpointPath(dir, "epoch_1"));
  ASSERT_NE(reloaded, nullptr);
  for (const auto& item : model->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), reloaded->named_parameters()[item.key()])) << item.key();
  }

  // Restoring the state and stepping again matches continuing in memory.
  auto resumed = LoadTinyVit(ReferencePath("tiny-vit.safetensors"));
  AdamW resumed_optimizer(OpenClipParamGroups(*resumed, 0.2), AdamWOptions{1e-3, 0.9, 0.98, 1e-6});
  auto state =
      LoadTrainingCheckpoint(ModelCheckpointPath(dir, "epoch_1"), *resumed, &resumed_optimizer);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->epoch, 1);
  EXPECT_EQ(state->step, 7);
  EXPECT_EQ(state->name, "run");
  FakeStep(*model, optimizer, -0.25f);
  FakeStep(*resumed, resumed_optimizer, -0.25f);
  for (const auto& item : model->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), resumed->named_parameters()[item.key()])) << item.key();
  }
}

TEST(CheckpointTest, LossScalerStateRoundTrips) {
  // --precision amp keeps its GradScaler's scale and growth count (OpenCLIP
  // saves scaler.state_dict()); runs without a scaler record none.
  const std::string dir = ScratchPath("ckpt_scaler");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  auto model = LoadTinyVit(ReferencePath("tiny-vit.safetensors"));
  ASSERT_NE(model, nullptr);
  AdamW optimizer(OpenClipParamGroups(*model, 0.2), AdamWOptions{1e-3, 0.9, 0.98, 1e-6});
  TrainingState saved{2, 9, "run", "tiny"};
  saved.scaler_scale = 8192.0;
  saved.scaler_growth_tracker = 17;
  ASSERT_TRUE(SaveTrainingCheckpoint(dir, "epoch_2", *model, optimizer, saved).ok());
  ASSERT_TRUE(SaveTrainingCheckpoint(dir, "epoch_3", *model, optimizer, {3, 12, "run", "tiny"})
                  .ok());
  auto with = LoadTrainingCheckpoint(ModelCheckpointPath(dir, "epoch_2"), *model, &optimizer);
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(with->scaler_scale, 8192.0);
  EXPECT_EQ(with->scaler_growth_tracker, 17);
  auto without = LoadTrainingCheckpoint(ModelCheckpointPath(dir, "epoch_3"), *model, &optimizer);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(without->scaler_scale, 0.0);
}

TEST(CheckpointTest, LatestIsTheNewestCompletePair) {
  const std::string dir = ScratchPath("ckpt_latest");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  EXPECT_EQ(FindLatestCheckpoint(dir).status().code(), absl::StatusCode::kNotFound);
  auto model = LoadTinyVit(ReferencePath("tiny-vit.safetensors"));
  ASSERT_NE(model, nullptr);
  AdamW optimizer(OpenClipParamGroups(*model, 0.2), AdamWOptions{});
  for (int epoch : {2, 10}) {
    ASSERT_TRUE(SaveTrainingCheckpoint(dir, "epoch_" + std::to_string(epoch), *model, optimizer,
                                       {epoch, epoch * 5, "run", "tiny"})
                    .ok());
  }
  auto latest = FindLatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, ModelCheckpointPath(dir, "epoch_10"));  // Natural, not lexical, order.

  // A crash between the two writes of epoch 11 leaves a state without its
  // model: not a candidate.
  ASSERT_TRUE(
      SaveTrainingCheckpoint(dir, "epoch_11", *model, optimizer, {11, 55, "run", "tiny"}).ok());
  ASSERT_EQ(::unlink(ModelCheckpointPath(dir, "epoch_11").c_str()), 0);
  EXPECT_EQ(*FindLatestCheckpoint(dir), ModelCheckpointPath(dir, "epoch_10"));

  // A model file of another epoch next to the state is refused on load.
  ASSERT_EQ(::rename(ModelCheckpointPath(dir, "epoch_2").c_str(),
                     ModelCheckpointPath(dir, "epoch_11").c_str()),
            0);
  EXPECT_EQ(*FindLatestCheckpoint(dir), ModelCheckpointPath(dir, "epoch_10"));
  EXPECT_EQ(LoadTrainingCheckpoint(ModelCheckpointPath(dir, "epoch_11"), *model, &optimizer)
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace oclip
