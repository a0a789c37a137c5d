#include "model/precision.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace oclip {

absl::StatusOr<InferencePrecision> ParseInferencePrecision(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "fp32" || lower == "float32") return InferencePrecision::kFp32;
  if (lower == "fp16" || lower == "float16") return InferencePrecision::kFp16;
  if (lower == "bf16" || lower == "bfloat16") return InferencePrecision::kBf16;
  if (lower == "int8" || lower == "qint8") return InferencePrecision::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown precision '", name,
                   "'; expected fp32, fp16, bf16 or int8 (or float32, float16, bfloat16, qint8)"));
}

absl::string_view InferencePrecisionName(InferencePrecision precision) {
  switch (precision) {
    case InferencePrecision::kFp32:
      return "fp32";
    case InferencePrecision::kFp16:
      return "fp16";
    case InferencePrecision::kBf16:
      return "bf16";
    case InferencePrecision::kInt8:
      return "int8";
  }
  return "fp32";
}

}  // namespace oclip
