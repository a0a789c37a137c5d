// `oclip train`'s engine: OpenCLIP's training loop (training/main.py and
// train.py) for one rank of a data-parallel job.
//
// Per optimizer step: LR from the schedule (lr_schedule.h), forward under
// the --precision's autocast, ClipLoss (clip_loss.h, gathered over ranks),
// backward (with --accum-freq > 1 OpenCLIP's feature-caching accumulation),
// gradients averaged over ranks (distributed.h), optional clipping, AdamW
// (with --precision amp through a dynamic loss scaler, grad_scaler.h, which
// unscales before clipping and skips steps with inf/NaN gradients)
// with OpenCLIP's parameter groups, logit_scale clamped to [0, ln 100]. A
// non-finite loss skips the step on every rank and is counted; more than
// `max_consecutive_nonfinite` in a row stop the run with FAILED_PRECONDITION
// (checkpoints already written stay as they were).
//
// Run directory (master rank; --logs none disables it): LOGS/NAME/out.log,
// params.txt, checkpoints/epoch_N.safetensors (+ .state.safetensors, see
// checkpoint.h), checkpoints/results.jsonl (one JSON line per evaluation),
// tensorboard/ (with --report-to tensorboard). Evaluation after each epoch as
// OpenCLIP schedules it (evaluation.h).
//
// Errors: Create returns INVALID_ARGUMENT for inconsistent options and
// FAILED_PRECONDITION for a run directory that exists (unless resuming
// "latest"); Run returns the first error of data, I/O or LibTorch (caught).
// Not thread-safe: one Run per Trainer.

#ifndef OCLIP_TRAINING_TRAINER_H_
#define OCLIP_TRAINING_TRAINER_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/clip_model.h"
#include "model/image/preprocess.h"
#include "model/image/train_transform.h"
#include "model/tokenizer/tokenizer.h"
#include "training/clip_loss.h"
#include "training/communicator.h"
#include "training/data_pipeline.h"
#include "training/evaluation.h"
#include "training/grad_scaler.h"
#include "training/lr_schedule.h"
#include "training/optimizer.h"
#include "training/precision.h"

namespace oclip {

class TensorBoardWriter;

struct TrainerOptions {
  // Data (OpenCLIP's flag names in comments).
  std::string train_data;             // --train-data
  std::string val_data;               // --val-data
  std::string dataset_type = "auto";  // --dataset-type auto|csv|webdataset|synthetic
  std::string csv_img_key = "filepath";
  std::string csv_caption_key = "title";
  char csv_separator = '\t';
  int64_t train_num_samples = 0;
  int64_t val_num_samples = 0;
  bool dataset_resampled = false;
  int workers = 4;
  std::string imagenet_val;         // --imagenet-val (ImageFolder root)
  std::string zeroshot_classnames;  // class names file for --imagenet-val
  std::string zeroshot_templates;   // templates file ("" = "a photo of a {}.")

  // Model.
  std::string model_name;  // for params.txt, checkpoints and the run name
  bool lock_image = false;
  int lock_image_unlocked_groups = 0;
  bool lock_text = false;
  int lock_text_unlocked_layers = 0;
  bool lock_text_freeze_layer_norm = false;
  // --grad-checkpointing: recompute the transformer blocks' activations in
  // the backward pass (ClipModel::SetGradCheckpointing).
  bool grad_checkpointing = false;

  // Optimisation.
  int64_t batch_size = 64;
  int64_t epochs = 32;
  AdamWOptions adamw;
  double wd = 0.2;
  int64_t warmup = 10000;
  LrScheduler lr_scheduler = LrScheduler::kCosine;
  int64_t epochs_cooldown = 0;
  double lr_cooldown_end = 0.0;
  double lr_cooldown_power = 1.0;
  bool skip_scheduler = false;
  double grad_clip_norm = 0;  // <= 0: no clipping
  int accum_freq = 1;
  TrainPrecision precision = TrainPrecision::kFp32;
  ClipLossOptions loss;
  int max_consecutive_nonfinite = 10;

  // Checkpoints and logs.
  int save_frequency = 1;
  bool save_most_recent = false;
  std::string resume;  // a checkpoint path, or "latest"
  bool delete_previous_checkpoint = false;
  std::string logs = "./logs/";
  std::string name;  // "" = OpenCLIP's date-model-lr-batch name
  bool tensorboard = false;
  int log_every_n_steps = 100;
  int zeroshot_frequency = 2;
  int val_frequency = 1;
  uint64_t seed = 0;
  // Preprocessing for evaluation (eval transform) and training (+ crop).
  PreprocessOptions preprocess;
  RandomResizedCropOptions crop;
};

// What a finished run did (for the CLI's summary and tests).
struct TrainSummary {
  int64_t steps = 0;          // optimizer steps taken in this process
  int64_t skipped_steps = 0;  // non-finite losses
  double last_loss = 0;
  Metrics last_metrics;
  std::string run_dir;          // "" when --logs none
  std::string last_checkpoint;  // "" when none was written
};

class Trainer {
 public:
  // `communicator` may be null (one process) and must outlive the trainer.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options,
                                                         std::shared_ptr<ClipModel> model,
                                                         std::unique_ptr<Tokenizer> tokenizer,
                                                         Communicator* communicator);
  ~Trainer();

  absl::StatusOr<TrainSummary> Run();

 private:
  Trainer(const TrainerOptions& options, std::shared_ptr<ClipModel> model,
          std::unique_ptr<Tokenizer> tokenizer, Communicator* communicator);

  absl::Status Setup();
  absl::Status ApplyLocks();
  absl::Status TrainEpoch(int64_t epoch);
  // One optimizer step over `micro_batches` (accum_freq of them).
  absl::Status OptimizerStep(const std::vector<Batch>& micro_batches, int64_t step);
  absl::Status Evaluate(int64_t completed_epoch);
  absl::Status SaveCheckpoints(int64_t completed_epoch);
  void Info(const std::string& message);
  absl::Status Scalar(const std::string& tag, double value, int64_t step);
  torch::Tensor Loss(const torch::Tensor& image_features, const torch::Tensor& text_features);

  TrainerOptions options_;
  std::shared_ptr<ClipModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  Communicator* communicator_;
  LocalCommunicator local_;
  bool master_ = true;
  torch::Device device_ = torch::kCPU;
  std::unique_ptr<AdamW> optimizer_;
  GradScaler scaler_;  // enabled for --precision amp only, as OpenCLIP
  std::vector<torch::Tensor> parameters_;
  std::unique_ptr<DataPipeline> train_;
  std::unique_ptr<DataPipeline> val_;
  LrScheduleOptions schedule_;
  int64_t steps_per_epoch_ = 0;
  int64_t start_epoch_ = 0;
  int64_t step_ = 0;
  int consecutive_nonfinite_ = 0;
  std::string run_dir_;
  std::string checkpoint_dir_;
  std::ofstream out_log_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  TrainSummary summary_;
  // Running average of the loss between log lines.
  double loss_sum_ = 0;
  int64_t loss_count_ = 0;
};

}  // namespace oclip

#endif  // OCLIP_TRAINING_TRAINER_H_
