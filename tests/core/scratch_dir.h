// A scratch folder for test files, private to the test process: CTest runs
// the cases of one binary as parallel processes, which must not write the
// same paths.

#ifndef OCLIP_TESTS_CORE_SCRATCH_DIR_H_
#define OCLIP_TESTS_CORE_SCRATCH_DIR_H_

#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

namespace oclip::testing {

inline std::string ScratchDir() {
  static const std::string dir = [] {
    std::string path = ::testing::TempDir() + "/oclip_test_" + std::to_string(::getpid());
    ::mkdir(path.c_str(), 0755);
    return path;
  }();
  return dir;
}

inline std::string ScratchPath(const std::string& name) { return ScratchDir() + "/" + name; }

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_CORE_SCRATCH_DIR_H_
