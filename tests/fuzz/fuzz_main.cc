// libFuzzer's entry point for one target: compiled once per fuzz executable
// with OCLIP_FUZZ_FUNCTION naming the target's function (see fuzz_target.h).
#include <cstddef>
#include <cstdint>

namespace oclip::fuzz {
int OCLIP_FUZZ_FUNCTION(const uint8_t* data, size_t size);
}  // namespace oclip::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return oclip::fuzz::OCLIP_FUZZ_FUNCTION(data, size);
}
