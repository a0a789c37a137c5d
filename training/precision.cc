#include "training/precision.h"

#include <ATen/autocast_mode.h>

#include "absl/strings/str_cat.h"

namespace oclip {

absl::StatusOr<TrainPrecision> ParseTrainPrecision(absl::string_view name,
                                                   const torch::Device& device) {
  TrainPrecision precision;
  if (name == "fp32") {
    precision = TrainPrecision::kFp32;
  } else if (name == "amp") {
    precision = TrainPrecision::kAmp;
  } else if (name == "amp_bf16" || name == "amp_bfloat16") {
    precision = TrainPrecision::kAmpBf16;
  } else if (name == "pure_bf16") {
    precision = TrainPrecision::kPureBf16;
  } else if (name == "fp16") {
    precision = TrainPrecision::kFp16;
  } else if (name == "pure_fp16") {
    precision = TrainPrecision::kPureFp16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown --precision '", name,
        "' (expected fp32, amp, amp_bf16, amp_bfloat16, pure_bf16, fp16 or pure_fp16)"));
  }
  if ((precision == TrainPrecision::kAmp || precision == TrainPrecision::kFp16 ||
       precision == TrainPrecision::kPureFp16)) {
    if (!device.is_cuda()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--precision ", name, " needs a CUDA device (fp16 with a grad scaler); on the CPU use ",
          "fp32, amp_bf16 or pure_bf16"));
    }
    return absl::UnimplementedError(absl::StrCat(
        "--precision ", name, " (fp16 with a grad scaler) is not implemented yet; use amp_bf16"));
  }
  return precision;
}

const char* TrainPrecisionName(TrainPrecision precision) {
  switch (precision) {
    case TrainPrecision::kFp32:
      return "fp32";
    case TrainPrecision::kAmp:
      return "amp";
    case TrainPrecision::kAmpBf16:
      return "amp_bf16";
    case TrainPrecision::kPureBf16:
      return "pure_bf16";
    case TrainPrecision::kFp16:
      return "fp16";
    case TrainPrecision::kPureFp16:
      return "pure_fp16";
  }
  return "?";
}

torch::ScalarType WeightDtype(TrainPrecision precision) {
  switch (precision) {
    case TrainPrecision::kPureBf16:
      return torch::kBFloat16;
    case TrainPrecision::kPureFp16:
      return torch::kHalf;
    default:
      return torch::kFloat;
  }
}

torch::ScalarType AutocastDtype(TrainPrecision precision) {
  switch (precision) {
    case TrainPrecision::kAmpBf16:
      return torch::kBFloat16;
    case TrainPrecision::kAmp:
      return torch::kHalf;
    default:
      return torch::kFloat;
  }
}

AutocastGuard::AutocastGuard(torch::ScalarType dtype, const torch::Device& device) {
  if (dtype == torch::kFloat) return;
  active_ = true;
  cuda_ = device.is_cuda();
  if (cuda_) {
    previous_enabled_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
  } else {
    previous_enabled_ = at::autocast::is_cpu_enabled();
    previous_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(true);
  }
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  if (cuda_) {
    at::autocast::set_enabled(previous_enabled_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
  } else {
    at::autocast::set_cpu_enabled(previous_enabled_);
    at::autocast::set_autocast_cpu_dtype(previous_dtype_);
  }
}

}  // namespace oclip
