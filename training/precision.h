// --precision as OpenCLIP spells it (training/precision.py) and the autocast
// scope it implies. On the CPU: fp32, amp_bf16 (= amp_bfloat16: fp32 weights,
// bf16 autocast) and pure_bf16 (bf16 weights and inputs). amp, fp16 and
// pure_fp16 need CUDA (fp16 autocast and a grad scaler); bf16 (OpenCLIP's
// mixed-cast model) is not offered.

#ifndef OCLIP_TRAINING_PRECISION_H_
#define OCLIP_TRAINING_PRECISION_H_

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oclip {

enum class TrainPrecision { kFp32, kAmp, kAmpBf16, kPureBf16, kFp16, kPureFp16 };

// INVALID_ARGUMENT for unknown names; FAILED_PRECONDITION for a mode this
// device cannot run (amp/fp16/pure_fp16 without CUDA), saying what to use.
absl::StatusOr<TrainPrecision> ParseTrainPrecision(absl::string_view name,
                                                   const torch::Device& device);

// OpenCLIP's spelling ("fp32", "amp_bf16", ...).
const char* TrainPrecisionName(TrainPrecision precision);

// The dtype of weights and inputs (kBFloat16 for pure_bf16, kHalf for
// pure_fp16, else kFloat), and the autocast dtype (kFloat: no autocast).
torch::ScalarType WeightDtype(TrainPrecision precision);
torch::ScalarType AutocastDtype(TrainPrecision precision);

// Enables CPU (or CUDA) autocast to `dtype` for its lifetime; kFloat: no-op.
class AutocastGuard {
 public:
  AutocastGuard(torch::ScalarType dtype, const torch::Device& device);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool previous_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kFloat;
};

}  // namespace oclip

#endif  // OCLIP_TRAINING_PRECISION_H_
