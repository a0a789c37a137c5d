// Access to the reference outputs of Python OpenCLIP (../shared/reference)
// for the model tests, and the tolerance helpers they share.

#ifndef OCLIP_TESTS_MODEL_REFERENCE_H_
#define OCLIP_TESTS_MODEL_REFERENCE_H_

#include <string>
#include <vector>

#include <torch/torch.h>

namespace oclip::testing {

// $OCLIP_REFERENCE_DIR, else <source>/../shared/reference.
std::string ReferenceDir();
std::string ReferencePath(const std::string& relative);

// One tensor of a reference safetensors file, as a CPU tensor that owns its
// memory. Fails the current test (and returns an undefined tensor) if absent.
torch::Tensor LoadReferenceTensor(const std::string& relative_file, const std::string& key);

// Checks tokenizer output `rows` (row-major [texts.size(), L]) against the
// reference ids `expected` [N, L], row by row, naming the text on failure.
void ExpectTokenRowsMatch(const std::vector<int64_t>& rows, const torch::Tensor& expected,
                          const std::vector<std::string>& texts);

// A GoogleTest parameter name from any text: non-alphanumerics become '_'.
std::string TestNameFrom(std::string text);

// ‖actual − expected‖ / ‖expected‖ over all elements (float64 arithmetic).
double RelativeError(const torch::Tensor& actual, const torch::Tensor& expected);

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_MODEL_REFERENCE_H_
