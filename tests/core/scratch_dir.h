// A scratch folder for test files, private to the test process: CTest runs
// the cases of one binary as parallel processes, which must not write the
// same paths. The folder is removed when the process exits, so that test runs
// do not pile up in /tmp (set OCLIP_KEEP_TEST_FILES=1 to keep it for a look
// after a failure).

#ifndef OCLIP_TESTS_CORE_SCRATCH_DIR_H_
#define OCLIP_TESTS_CORE_SCRATCH_DIR_H_

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include <gtest/gtest.h>

namespace oclip::testing {

class ScratchFolder {
 public:
  ScratchFolder()
      : owner_(::getpid()),
        path_(::testing::TempDir() + "/oclip_test_" + std::to_string(owner_)) {
    ::mkdir(path_.c_str(), 0755);
  }
  // Only the process that made it removes it: a forked child that exits
  // through exit() runs this destructor too.
  ~ScratchFolder() {
    if (::getpid() != owner_ || std::getenv("OCLIP_KEEP_TEST_FILES") != nullptr) return;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;

  const std::string& path() const { return path_; }

 private:
  const pid_t owner_;
  const std::string path_;
};

inline std::string ScratchDir() {
  static const ScratchFolder folder;
  return folder.path();
}

inline std::string ScratchPath(const std::string& name) { return ScratchDir() + "/" + name; }

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_CORE_SCRATCH_DIR_H_
