// Registry and helpers of tests/fuzz/fuzz_target.h.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

namespace oclip::fuzz {

std::map<std::string, FuzzFunction>& Targets() {
  static auto* targets = new std::map<std::string, FuzzFunction>();
  return *targets;
}

bool RegisterTarget(const char* name, FuzzFunction function) {
  Targets()[name] = function;
  return true;
}

std::string ReferenceFile(const std::string& relative) {
  const char* env = std::getenv("OCLIP_REFERENCE_DIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : OCLIP_REFERENCE_DIR_DEFAULT;
  return dir + "/" + relative;
}

namespace {

// The file the path-reading targets get their input in, one per process and
// removed when the process exits (the replay test runs in /tmp).
class ScratchFile {
 public:
  ScratchFile() : owner_(getpid()), path_(Folder() + "/oclip-fuzz-" + std::to_string(owner_)) {}
  ~ScratchFile() {
    if (getpid() == owner_) std::remove(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  static std::string Folder() {
    const char* tmp = std::getenv("TMPDIR");
    return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  const pid_t owner_;
  const std::string path_;
};

}  // namespace

const std::string& WriteScratchFile(const uint8_t* data, size_t size) {
  static const ScratchFile file;
  std::ofstream out(file.path(), std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) CheckFailed(__FILE__, __LINE__, "writing the scratch file");
  return file.path();
}

std::vector<int64_t> TokenizeChecked(const Tokenizer& tokenizer, const uint8_t* data,
                                     size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<int64_t> ids = tokenizer.Tokenize({text});
  OCLIP_FUZZ_CHECK(static_cast<int>(ids.size()) == tokenizer.context_length());
  for (int64_t id : ids) OCLIP_FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size());
  return ids;
}

void CheckFailed(const char* file, int line, const char* condition) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", file, line, condition);
  std::abort();
}

}  // namespace oclip::fuzz
