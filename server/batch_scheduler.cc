#include "server/batch_scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace oclip {

absl::Status ValidateBatchSchedulerOptions(const BatchSchedulerOptions& options) {
  if (options.max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch scheduler: max_batch_size must be >= 1, got ", options.max_batch_size));
  }
  if (options.max_queue_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch scheduler: max_queue_delay must be >= 0, got ",
                     absl::FormatDuration(options.max_queue_delay)));
  }
  if (options.queue_capacity < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch scheduler: queue_capacity must be >= 1, got ", options.queue_capacity));
  }
  if (options.num_lanes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch scheduler: num_lanes must be >= 1, got ", options.num_lanes));
  }
  return absl::OkStatus();
}

namespace batch_scheduler_internal {

absl::Status QueueFullError(int queued, int capacity) {
  return absl::ResourceExhaustedError(
      absl::StrCat("queue full: ", queued, " queued, capacity ", capacity));
}

absl::Status CheckEnqueueArguments(const BatchSchedulerOptions& options, int lane,
                                   size_t num_items) {
  if (lane < 0 || lane >= options.num_lanes) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch scheduler: lane ", lane, " out of range [0, ", options.num_lanes, ")"));
  }
  // Retrying could never help such a request, so it is not RESOURCE_EXHAUSTED.
  if (num_items > static_cast<size_t>(options.queue_capacity)) {
    return absl::InvalidArgumentError(absl::StrCat("batch scheduler: ", num_items,
                                                   " items can never fit a queue of capacity ",
                                                   options.queue_capacity));
  }
  return absl::OkStatus();
}

absl::Status ClosedError() {
  return absl::UnavailableError("batch scheduler: closed, not accepting new items");
}

BatchSchedulerOptions Sanitize(BatchSchedulerOptions options) {
  options.max_batch_size = std::max(1, options.max_batch_size);
  options.max_queue_delay = std::max(absl::ZeroDuration(), options.max_queue_delay);
  options.queue_capacity = std::max(1, options.queue_capacity);
  options.num_lanes = std::max(1, options.num_lanes);
  return options;
}

}  // namespace batch_scheduler_internal
}  // namespace oclip
