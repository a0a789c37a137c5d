// Training checkpoints, written atomically (each file through a temporary
// and a rename, core/safetensors.h):
//   DIR/epoch_N.safetensors        the model: every parameter and buffer
//                                  under OpenCLIP's state-dict names, float32,
//                                  so `oclip encode/serve --pretrained FILE`
//                                  and OpenCLIP's load_checkpoint read it;
//   DIR/epoch_N.state.safetensors  the training state: AdamW moments and
//                                  steps ("optimizer/exp_avg/NAME", ...) and
//                                  metadata (epoch, step, run name, model,
//                                  and the loss scaler's scale and growth
//                                  count when there is one).
// The state file is written first and the model file last, and both carry
// the epoch, so a crash between the two is detected on resume. All other
// randomness of a run derives from (seed, epoch, rank), so nothing else is
// needed to continue exactly at an epoch boundary, as OpenCLIP resumes.
//
// Errors: NOT_FOUND (no checkpoint), DATA_LOSS (corrupt or mismatched pair),
// INVALID_ARGUMENT (a checkpoint of another model), I/O errors as statuses.

#ifndef OCLIP_TRAINING_CHECKPOINT_H_
#define OCLIP_TRAINING_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "model/clip_model.h"
#include "training/optimizer.h"

namespace oclip {

struct TrainingState {
  int64_t epoch = 0;  // Completed epochs.
  int64_t step = 0;   // Optimizer steps taken.
  std::string name;   // Run name.
  std::string model;  // --model
  // The loss scaler of --precision amp (grad_scaler.h); scale 0: none.
  double scaler_scale = 0;
  int64_t scaler_growth_tracker = 0;
};

// Writes DIR/BASENAME.state.safetensors then DIR/BASENAME.safetensors.
absl::Status SaveTrainingCheckpoint(const std::string& dir, const std::string& basename,
                                    ClipModel& model, const AdamW& optimizer,
                                    const TrainingState& state);

// The model file path for a basename.
std::string ModelCheckpointPath(const std::string& dir, const std::string& basename);
std::string StateCheckpointPath(const std::string& dir, const std::string& basename);

// OpenCLIP's `--resume latest`: epoch_latest if present and complete, else
// the epoch_N with the largest N whose pair is complete. Returns the model
// file path; NOT_FOUND if there is none.
absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& dir);

// Loads the model file `path` into `model` (strictly, as `--pretrained`),
// and, if its state file exists, the optimizer state; returns the state
// (epoch 0 and step 0 for a bare model file, as OpenCLIP treats a state
// dict without "epoch").
absl::StatusOr<TrainingState> LoadTrainingCheckpoint(const std::string& path, ClipModel& model,
                                                     AdamW* optimizer);

}  // namespace oclip

#endif  // OCLIP_TRAINING_CHECKPOINT_H_
