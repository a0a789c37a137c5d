#include "tests/model/reference.h"

#include <cctype>
#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

#include "core/safetensors.h"

namespace oclip::testing {

std::string ReferenceDir() {
  const char* env = std::getenv("OCLIP_REFERENCE_DIR");
  return (env != nullptr && env[0] != '\0') ? env : OCLIP_REFERENCE_DIR_DEFAULT;
}

std::string ReferencePath(const std::string& relative) {
  return ReferenceDir() + "/" + relative;
}

torch::Tensor LoadReferenceTensor(const std::string& relative_file, const std::string& key) {
  auto reader = SafetensorsReader::Open(ReferencePath(relative_file));
  if (!reader.ok()) {
    ADD_FAILURE() << reader.status();
    return {};
  }
  auto view = (*reader)->Get(key);
  if (!view.ok()) {
    ADD_FAILURE() << view.status();
    return {};
  }
  torch::ScalarType type = torch::kFloat;
  switch (view->dtype) {
    case DType::kF32: type = torch::kFloat; break;
    case DType::kI64: type = torch::kLong; break;
    case DType::kF64: type = torch::kDouble; break;
    default:
      ADD_FAILURE() << "unexpected dtype of " << key;
      return {};
  }
  torch::Tensor out = torch::empty(view->shape, torch::TensorOptions().dtype(type));
  std::memcpy(out.data_ptr(), view->data, view->size_bytes);
  return out;
}

std::string TestNameFrom(std::string text) {
  for (char& c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return text;
}

double RelativeError(const torch::Tensor& actual, const torch::Tensor& expected) {
  torch::Tensor a = actual.detach().to(torch::kCPU, torch::kDouble);
  torch::Tensor e = expected.detach().to(torch::kCPU, torch::kDouble);
  return ((a - e).norm() / e.norm()).item<double>();
}

}  // namespace oclip::testing
