#include "training/precision.h"

#include <ATen/autocast_mode.h>

#include "absl/strings/str_cat.h"

namespace oclip {

absl::StatusOr<Precision> ParsePrecision(absl::string_view name, const torch::Device& device) {
  Precision precision;
  if (name == "fp32") {
    precision = Precision::kFp32;
  } else if (name == "amp") {
    precision = Precision::kAmp;
  } else if (name == "amp_bf16" || name == "amp_bfloat16") {
    precision = Precision::kAmpBf16;
  } else if (name == "pure_bf16") {
    precision = Precision::kPureBf16;
  } else if (name == "fp16") {
    precision = Precision::kFp16;
  } else if (name == "pure_fp16") {
    precision = Precision::kPureFp16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown --precision '", name,
        "' (expected fp32, amp, amp_bf16, amp_bfloat16, pure_bf16, fp16 or pure_fp16)"));
  }
  if ((precision == Precision::kAmp || precision == Precision::kFp16 ||
       precision == Precision::kPureFp16)) {
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

torch::ScalarType WeightDtype(Precision precision) {
  switch (precision) {
    case Precision::kPureBf16: return torch::kBFloat16;
    case Precision::kPureFp16: return torch::kHalf;
    default: return torch::kFloat;
  }
}

torch::ScalarType AutocastDtype(Precision precision) {
  switch (precision) {
    case Precision::kAmpBf16: return torch::kBFloat16;
    case Precision::kAmp: return torch::kHalf;
    default: return torch::kFloat;
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
