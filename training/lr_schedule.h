// OpenCLIP's learning-rate schedules (training/scheduler.py), evaluated per
// optimizer step (OpenCLIP calls the scheduler before every step):
//   warmup (step < W): base·(step+1)/W
//   cosine: ½·(1 + cos(π·(step−W)/(total−W)))·base
//   const: base
//   const-cooldown: base until total − cooldown_steps, then
//     (1 − e/E)^power·(base − end) + end, e = step − start, E = total − start
// Pure functions; thread-safe.

#ifndef OCLIP_TRAINING_LR_SCHEDULE_H_
#define OCLIP_TRAINING_LR_SCHEDULE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oclip {

enum class LrScheduler { kCosine, kConst, kConstCooldown };

// "cosine", "const", "const-cooldown"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LrScheduler> ParseLrScheduler(absl::string_view name);

struct LrScheduleOptions {
  LrScheduler scheduler = LrScheduler::kCosine;
  double base_lr = 5e-4;
  int64_t warmup_steps = 10000;  // --warmup
  int64_t total_steps = 0;       // (batches per epoch // accum_freq) · epochs
  int64_t cooldown_steps = 0;    // (batches per epoch // accum_freq) · epochs_cooldown
  double cooldown_end_lr = 0.0;  // --lr-cooldown-end
  double cooldown_power = 1.0;   // --lr-cooldown-power
};

double LearningRate(const LrScheduleOptions& options, int64_t step);

}  // namespace oclip

#endif  // OCLIP_TRAINING_LR_SCHEDULE_H_
