#include "tests/index/test_data.h"

#include <cstdlib>
#include <filesystem>

#include <unistd.h>

#include "gtest/gtest.h"

namespace oclip {
namespace index {
namespace {

// Directories MakeTempDir made, removed when the test program ends.
class TempDirs : public ::testing::Environment {
 public:
  static TempDirs* Get() {
    // Owned by GoogleTest once registered.
    static TempDirs* dirs = [] {
      auto* d = new TempDirs;
      ::testing::AddGlobalTestEnvironment(d);
      return d;
    }();
    return dirs;
  }
  void Add(const std::string& dir) { dirs_.push_back(dir); }
  void TearDown() override {
    std::error_code ec;
    for (const auto& dir : dirs_) std::filesystem::remove_all(dir, ec);
  }

 private:
  std::vector<std::string> dirs_;
};

}  // namespace

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = base != nullptr ? base : std::filesystem::temp_directory_path();
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  dir /= "oclip_index_test_" + std::to_string(::getpid()) + "_" + name +
         (info != nullptr ? std::string("_") + info->name() : std::string());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  TempDirs::Get()->Add(dir.string());
  return dir.string();
}

}  // namespace index
}  // namespace oclip
