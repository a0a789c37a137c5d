// Measuring helpers shared by the `oclip bench` kinds.

#ifndef OCLIP_CLI_BENCH_UTIL_H_
#define OCLIP_CLI_BENCH_UTIL_H_

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "core/status.h"
#include "model/config.h"

namespace oclip::cli {

using BenchClock = std::chrono::steady_clock;

inline double SecondsSince(BenchClock::time_point start) {
  return std::chrono::duration<double>(BenchClock::now() - start).count();
}

// Calls `step` (which processes `items_per_step` items) until `seconds` have
// passed (at least twice, after one warm-up call); returns items per second,
// and the number of timed calls in *steps_out when given.
template <typename Step>
absl::StatusOr<double> MeasureThroughput(double seconds, int64_t items_per_step, Step step,
                                         int64_t* steps_out = nullptr) {
  OCLIP_RETURN_IF_ERROR(step());  // Warm-up: caches, allocator, lazy init.
  int64_t steps = 0;
  const auto start = BenchClock::now();
  double elapsed = 0;
  while (steps < 2 || elapsed < seconds) {
    OCLIP_RETURN_IF_ERROR(step());
    ++steps;
    elapsed = SecondsSince(start);
  }
  if (steps_out != nullptr) *steps_out = steps;
  return static_cast<double>(steps * items_per_step) / elapsed;
}

// Token ids [batch, context_length] of captions of typical length: a start
// token, 10 random ids, an end token, then padding (the model's own
// specials: CLIP's BPE, or an HF tokenizer's <s> </s> <pad>).
inline torch::Tensor BenchmarkTokens(const ModelConfig& config, int64_t batch,
                                     int64_t length = 12) {
  const bool hf = config.text.is_hf();
  length = std::clamp<int64_t>(length, 2, config.text.context_length);
  torch::Tensor tokens = torch::zeros({batch, config.text.context_length}, torch::kLong);
  tokens.slice(1, 0, length).random_(1, 1000);
  tokens.select(1, 0).fill_(hf ? 0 : 49406);
  tokens.select(1, length - 1).fill_(hf ? 2 : 49407);
  if (hf) tokens.slice(1, length).fill_(1);
  return tokens;
}

// `work_dir`, or a new directory under the system's temporary directory
// named `prefix`-XXXXXX.
inline absl::StatusOr<std::string> BenchWorkDir(const std::string& work_dir,
                                                const std::string& prefix) {
  if (!work_dir.empty()) return work_dir;
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) {
    return ErrnoToStatus(errno, "cannot create a temporary directory");
  }
  return pattern;
}

}  // namespace oclip::cli

#endif  // OCLIP_CLI_BENCH_UTIL_H_
