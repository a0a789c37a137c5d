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

void ExpectTokenRowsMatch(const std::vector<int64_t>& rows, const torch::Tensor& expected,
                          const std::vector<std::string>& texts) {
  ASSERT_TRUE(expected.defined());
  ASSERT_EQ(expected.dim(), 2);
  ASSERT_EQ(expected.size(0), static_cast<int64_t>(texts.size()));
  const int64_t length = expected.size(1);
  ASSERT_EQ(rows.size(), texts.size() * length);
  const int64_t* want = expected.data_ptr<int64_t>();
  for (size_t r = 0; r < texts.size(); ++r) {
    const std::vector<int64_t> got(rows.begin() + r * length, rows.begin() + (r + 1) * length);
    const std::vector<int64_t> exp(want + r * length, want + (r + 1) * length);
    EXPECT_EQ(got, exp) << "text " << r << ": " << texts[r];
  }
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
