// Replays the inputs kept in tests/fuzz/regressions/<target>/ (crashes and
// findings of scripts/fuzz.sh, fixed since) through every fuzz target, in the
// normal build without libFuzzer: a regression is a crash, an abort of a
// target's property check, or (in the sanitizer build) a sanitizer report.
// OCLIP_FUZZ_REPLAY_DIR=<dir> replays <dir>/<target>/ instead (e.g. a
// corpus of scripts/fuzz.sh, or the seeds of scripts/fuzz-seeds.sh).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/fuzz/fuzz_target.h"

namespace oclip::fuzz {
namespace {

namespace fs = std::filesystem;

const fs::path kRegressions = fs::path(OCLIP_SOURCE_DIR) / "tests/fuzz/regressions";

fs::path ReplayDir() {
  const char* dir = std::getenv("OCLIP_FUZZ_REPLAY_DIR");
  return dir != nullptr && *dir != '\0' ? fs::path(dir) : kRegressions;
}

std::vector<uint8_t> ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(FuzzReplayTest, EveryTargetIsLinked) {
  std::vector<std::string> expected = absl::StrSplit(OCLIP_FUZZ_TARGETS, ',');
  std::vector<std::string> linked;
  for (const auto& [name, function] : Targets()) linked.push_back(name);
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(linked, expected);
}

TEST(FuzzReplayTest, RegressionDirectoriesNameTargets) {
  ASSERT_TRUE(fs::is_directory(kRegressions)) << kRegressions;
  for (const auto& entry : fs::directory_iterator(kRegressions)) {
    if (!entry.is_directory()) continue;
    EXPECT_EQ(Targets().count(entry.path().filename().string()), 1u)
        << entry.path() << " names no fuzz target";
  }
}

TEST(FuzzReplayTest, RegressionInputsPass) {
  int replayed = 0;
  for (const auto& [name, function] : Targets()) {
    const fs::path dir = ReplayDir() / name;
    if (!fs::is_directory(dir)) continue;
    std::vector<fs::path> inputs;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file() && entry.path().filename() != "README.md") {
        inputs.push_back(entry.path());
      }
    }
    std::sort(inputs.begin(), inputs.end());
    for (const fs::path& input : inputs) {
      SCOPED_TRACE(input.string());
      const std::vector<uint8_t> bytes = ReadBytes(input);
      EXPECT_EQ(function(bytes.data(), bytes.size()), 0);
      ++replayed;
    }
  }
  std::printf("replayed %d regression inputs\n", replayed);
}

}  // namespace
}  // namespace oclip::fuzz
