// The shape of an oclip fuzz target. A target is written once as
//
//   OCLIP_FUZZ_TARGET(csv) { ...use data, size...; return 0; }
//
// which defines oclip::fuzz::Fuzz_csv and registers it under "csv". The
// libFuzzer executable fuzz_csv (sanitizer build, OCLIP_BUILD_FUZZERS) calls
// it from LLVMFuzzerTestOneInput (fuzz_main.cc); the normal build links every
// target into oclip_fuzz_replay_test, which feeds it the crash inputs kept in
// tests/fuzz/regressions/<name>/. A target must not leak, must return 0, and
// aborts (OCLIP_FUZZ_CHECK) when a property of the code under test breaks.
#ifndef OCLIP_TESTS_FUZZ_FUZZ_TARGET_H_
#define OCLIP_TESTS_FUZZ_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace oclip {
class Tokenizer;
}  // namespace oclip

namespace oclip::fuzz {

using FuzzFunction = int (*)(const uint8_t* data, size_t size);

// name -> target, for the replay test.
std::map<std::string, FuzzFunction>& Targets();
bool RegisterTarget(const char* name, FuzzFunction function);

// A fixture of shared/reference ($OCLIP_REFERENCE_DIR, else the source
// tree's ../shared/reference).
std::string ReferenceFile(const std::string& relative);

// Writes the input to this process's scratch file (under $TMPDIR) and returns
// its path: for readers that take a path (safetensors, checkpoints, tar
// shards, CSV files).
const std::string& WriteScratchFile(const uint8_t* data, size_t size);

// Tokenizes the input as one text and checks what every tokenizer promises:
// one row of context_length() ids, each in [0, vocab_size()). Returns them.
std::vector<int64_t> TokenizeChecked(const Tokenizer& tokenizer, const uint8_t* data,
                                     size_t size);

[[noreturn]] void CheckFailed(const char* file, int line, const char* condition);

}  // namespace oclip::fuzz

#define OCLIP_FUZZ_CHECK(condition) \
  do {                                                                        \
    if (!(condition)) ::oclip::fuzz::CheckFailed(__FILE__, __LINE__, #condition); \
  } while (0)

#define OCLIP_FUZZ_TARGET(name)                                                 \
  namespace oclip::fuzz {                                                       \
  int Fuzz_##name(const uint8_t* data, size_t size);                            \
  [[maybe_unused]] static const bool registered_##name =                        \
      RegisterTarget(#name, &Fuzz_##name);                                      \
  }                                                                             \
  int oclip::fuzz::Fuzz_##name(const uint8_t* data, size_t size)

#endif  // OCLIP_TESTS_FUZZ_FUZZ_TARGET_H_
