#include "training/lr_schedule.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace oclip {

absl::StatusOr<LrScheduler> ParseLrScheduler(absl::string_view name) {
  if (name == "cosine") return LrScheduler::kCosine;
  if (name == "const") return LrScheduler::kConst;
  if (name == "const-cooldown") return LrScheduler::kConstCooldown;
  return absl::InvalidArgumentError(absl::StrCat("unknown --lr-scheduler '", name,
                                                 "' (expected cosine, const or const-cooldown)"));
}

double LearningRate(const LrScheduleOptions& o, int64_t step) {
  if (step < o.warmup_steps) {
    return o.base_lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  switch (o.scheduler) {
    case LrScheduler::kConst:
      return o.base_lr;
    case LrScheduler::kCosine: {
      const double e = static_cast<double>(step - o.warmup_steps);
      const double es = static_cast<double>(o.total_steps - o.warmup_steps);
      if (es <= 0) return 0.0;  // Python divides by zero here; the schedule has ended.
      return 0.5 * (1 + std::cos(M_PI * e / es)) * o.base_lr;
    }
    case LrScheduler::kConstCooldown: {
      const int64_t start = o.total_steps - o.cooldown_steps;
      if (step < start) return o.base_lr;
      const double e = static_cast<double>(step - start);
      const double es = static_cast<double>(o.total_steps - start);
      if (es <= 0) return o.cooldown_end_lr;
      const double decay = std::pow(1 - e / es, o.cooldown_power);
      return decay * (o.base_lr - o.cooldown_end_lr) + o.cooldown_end_lr;
    }
  }
  return o.base_lr;
}

}  // namespace oclip
