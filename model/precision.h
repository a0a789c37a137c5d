// The precision a model is served in: one enum for `oclip serve`'s
// server.yaml, `oclip embed --precision` and `oclip bench encode`. Torch-free,
// so that the serving configuration parses without LibTorch; what each
// precision means on a device is model/inference_precision.h.

#ifndef OCLIP_MODEL_PRECISION_H_
#define OCLIP_MODEL_PRECISION_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oclip {

enum class InferencePrecision { kFp32, kFp16, kBf16, kInt8 };

// "fp32" | "fp16" | "bf16" | "int8" (also "float32", "float16", "bfloat16",
// "qint8"); case is ignored. INVALID_ARGUMENT otherwise, naming the accepted
// values.
absl::StatusOr<InferencePrecision> ParseInferencePrecision(absl::string_view name);

// The short name: "fp32", "fp16", "bf16" or "int8".
absl::string_view InferencePrecisionName(InferencePrecision precision);

}  // namespace oclip

#endif  // OCLIP_MODEL_PRECISION_H_
