// Measuring helpers shared by the `oclip bench` kinds.

#ifndef OCLIP_CLI_BENCH_UTIL_H_
#define OCLIP_CLI_BENCH_UTIL_H_

#include <chrono>
#include <cstdint>

#include "absl/status/statusor.h"
#include "core/status.h"

namespace oclip::cli {

using BenchClock = std::chrono::steady_clock;

inline double SecondsSince(BenchClock::time_point start) {
  return std::chrono::duration<double>(BenchClock::now() - start).count();
}

// Calls `step` (which processes `items_per_step` items) until `seconds` have
// passed (at least twice, after one warm-up call); returns items per second.
template <typename Step>
absl::StatusOr<double> MeasureThroughput(double seconds, int64_t items_per_step, Step step) {
  OCLIP_RETURN_IF_ERROR(step());  // Warm-up: caches, allocator, lazy init.
  int64_t steps = 0;
  const auto start = BenchClock::now();
  double elapsed = 0;
  while (steps < 2 || elapsed < seconds) {
    OCLIP_RETURN_IF_ERROR(step());
    ++steps;
    elapsed = SecondsSince(start);
  }
  return static_cast<double>(steps * items_per_step) / elapsed;
}

}  // namespace oclip::cli

#endif  // OCLIP_CLI_BENCH_UTIL_H_
