#include "data/webdataset.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cerrno>
#include <string>
#include <vector>

#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/data/test_shards.h"

namespace oclip {
namespace {

using ::oclip::testing::ExpectedSample;
using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ScratchPath;
using ::oclip::testing::ShellQuote;
using ::oclip::testing::TarMember;
using ::oclip::testing::WriteFile;
using ::oclip::testing::WriteFixtureShard;
using ::oclip::testing::WriteTar;

// Reads a shard to its end; `*error` gets the error Next reported, if any.
std::vector<Sample> ReadShard(const std::string& shard, absl::Status* error,
                              ShardStats* stats = nullptr, const WebDatasetOptions& options = {}) {
  std::vector<Sample> samples;
  auto reader = WebDatasetShardReader::Open(shard, options);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return samples;
  *error = absl::OkStatus();
  Sample sample;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->Next(&sample);
    if (!more.ok()) {
      EXPECT_TRUE(error->ok()) << "two errors from one shard";
      *error = more.status();
      continue;  // After the error, Next must return false.
    }
    if (!*more) break;
    samples.push_back(sample);
  }
  if (stats != nullptr) *stats = (*reader)->stats();
  return samples;
}

void ExpectSamplesMatch(const std::vector<Sample>& got, const std::vector<ExpectedSample>& want,
                        const std::string& shard) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(want[i].key);
    EXPECT_EQ(got[i].key, want[i].key);
    EXPECT_EQ(got[i].image_extension, want[i].image_extension);
    EXPECT_TRUE(got[i].image == want[i].image) << "image bytes differ";
    EXPECT_TRUE(got[i].has_caption);
    EXPECT_EQ(got[i].caption, want[i].caption);
    EXPECT_EQ(got[i].metadata_json, want[i].metadata_json);
    EXPECT_EQ(got[i].shard, shard);
    EXPECT_EQ(got[i].index_in_shard, static_cast<int64_t>(i));
    EXPECT_TRUE(got[i].image_path.empty());
  }
}

bool NoChildrenLeft() {
  int status;
  return waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD;
}

TEST(WebDatasetTest, SplitsKeysLikeBasePlusExt) {
  struct Case {
    const char* path;
    const char* key;
    const char* extension;
  };
  for (const Case& c :
       {Case{"000123.jpg", "000123", "jpg"}, Case{"a/b/000123.seg.PNG", "a/b/000123", "seg.PNG"},
        Case{"dir.v1/x.txt", "dir.v1/x", "txt"}, Case{"x.", "x", ""}}) {
    std::string key, extension;
    ASSERT_TRUE(SplitWebDatasetKey(c.path, &key, &extension)) << c.path;
    EXPECT_EQ(key, c.key);
    EXPECT_EQ(extension, c.extension);
  }
  std::string key, extension;
  for (const char* path : {"README", ".hidden.jpg", "dir.v1/noext", "a/.x.jpg", ""}) {
    EXPECT_FALSE(SplitWebDatasetKey(path, &key, &extension)) << path;
  }
}

TEST(WebDatasetTest, ReadsEverySampleWithKeyCaptionMetadataAndBytes) {
  std::vector<ExpectedSample> expected;
  const std::string shard = WriteFixtureShard("every.tar", &expected);
  ASSERT_GE(expected.size(), 7u);
  absl::Status error;
  ShardStats stats;
  const std::vector<Sample> samples = ReadShard(shard, &error, &stats);
  EXPECT_TRUE(error.ok()) << error;
  ExpectSamplesMatch(samples, expected, shard);
  EXPECT_EQ(stats.samples, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(stats.total_failures(), 0);
  EXPECT_TRUE(stats.status.ok());
}

TEST(WebDatasetTest, ReadsGzippedShards) {
  std::vector<ExpectedSample> expected;
  const std::string shard =
      WriteFixtureShard("every.tar.gz", &expected, testing::TarCompression::kGzip);
  absl::Status error;
  const std::vector<Sample> samples = ReadShard(shard, &error);
  EXPECT_TRUE(error.ok()) << error;
  ExpectSamplesMatch(samples, expected, shard);
}

TEST(WebDatasetTest, GroupsByKeyAndSkipsWhatWebdatasetSkips) {
  const std::string image = ReadFileOrEmpty(testing::FixtureImagePath("tiny.png"));
  const std::vector<TarMember> members = {
      {"__meta__", "{}"},                // Top-level webdataset metadata.
      {"sub", "", /*directory=*/true},   // Not a regular file.
      {"sub/README", "no extension"},    // No key.
      {"sub/a.JPG", image},              // Extensions are lower-cased.
      {"sub/a.seg.png", "other field"},  // "seg.png" is not an image field.
      {"sub/a.txt", "caption a"},
      {"sub/b.txt", "only a caption"},  // No image: incomplete.
      {"sub/c.png", image},             // No caption: fine by default.
      {"sub/c.png", image},             // Duplicate.
      {"sub/a.txt", "a again"},         // Not consecutive: a new group.
  };
  const std::string shard = ScratchPath("groups.tar");
  WriteTar(shard, members);
  absl::Status error;
  ShardStats stats;
  std::vector<Sample> samples = ReadShard(shard, &error, &stats);
  EXPECT_TRUE(error.ok()) << error;
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].key, "sub/a");
  EXPECT_EQ(samples[0].image_extension, "jpg");
  EXPECT_TRUE(samples[0].image == image);
  EXPECT_EQ(samples[0].caption, "caption a");
  EXPECT_EQ(samples[0].index_in_shard, 0);
  EXPECT_EQ(samples[1].key, "sub/c");
  EXPECT_FALSE(samples[1].has_caption);
  EXPECT_EQ(samples[1].index_in_shard, 2);                            // b was group 1.
  EXPECT_EQ(stats.failure_count(FailureKind::kIncompleteSample), 2);  // b, second a.
  EXPECT_EQ(stats.failure_count(FailureKind::kDuplicateMember), 1);

  WebDatasetOptions needs_caption;
  needs_caption.require_caption = true;
  samples = ReadShard(shard, &error, &stats, needs_caption);
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].key, "sub/a");
  EXPECT_EQ(stats.failure_count(FailureKind::kIncompleteSample), 3);
}

TEST(WebDatasetTest, OversizedMemberDropsItsSample) {
  std::vector<ExpectedSample> expected;
  const std::string shard = WriteFixtureShard("oversized.tar", &expected);
  size_t largest = 0;
  for (const ExpectedSample& s : expected) largest = std::max(largest, s.image.size());
  WebDatasetOptions options;
  options.max_member_bytes = static_cast<int64_t>(largest) - 1;
  absl::Status error;
  ShardStats stats;
  const std::vector<Sample> samples = ReadShard(shard, &error, &stats, options);
  EXPECT_TRUE(error.ok()) << error;
  EXPECT_EQ(samples.size(), expected.size() - 1);
  EXPECT_EQ(stats.failure_count(FailureKind::kOversizedMember), 1);
  EXPECT_EQ(stats.failure_count(FailureKind::kIncompleteSample), 0);
}

// Cuts `shard` inside the first member of sample `k`: at `into` bytes past
// the start of its header.
std::string CutShard(const std::string& shard, const std::string& name, size_t k, int64_t into,
                     const std::vector<ExpectedSample>& expected) {
  int64_t offset = -1;
  for (const auto& [member, position] : testing::MemberHeaderOffsets(shard)) {
    if (member == expected[k].key + "." + expected[k].image_extension) offset = position;
  }
  EXPECT_GT(offset, 0);
  const std::string cut = ScratchPath(name);
  WriteFile(cut, ReadFileOrEmpty(shard).substr(0, static_cast<size_t>(offset + into)));
  return cut;
}

TEST(WebDatasetTest, TruncatedShardDeliversCompleteSamplesThenCountsTheFailure) {
  std::vector<ExpectedSample> expected;
  const std::string shard = WriteFixtureShard("full.tar", &expected);
  const size_t k = 4;
  // Inside the image data of sample k, and inside its header.
  for (int64_t into : {int64_t{512 + 100}, int64_t{200}}) {
    SCOPED_TRACE(into);
    const std::string cut = CutShard(shard, "cut.tar", k, into, expected);
    absl::Status error;
    ShardStats stats;
    const std::vector<Sample> samples = ReadShard(cut, &error, &stats);
    ExpectSamplesMatch(samples, std::vector<ExpectedSample>(expected.begin(), expected.begin() + k),
                       cut);
    EXPECT_EQ(error.code(), absl::StatusCode::kDataLoss) << error;
    EXPECT_EQ(stats.failure_count(FailureKind::kTruncated), 1) << stats.ToString();
    EXPECT_EQ(stats.total_failures(), 1);
    EXPECT_EQ(stats.status, error);
  }
}

TEST(WebDatasetTest, DamagedHeaderIsCorruptAfterTheSamplesBeforeIt) {
  std::vector<ExpectedSample> expected;
  const std::string shard = WriteFixtureShard("full2.tar", &expected);
  const size_t k = 3;
  int64_t offset = -1;
  for (const auto& [member, position] : testing::MemberHeaderOffsets(shard)) {
    if (member == expected[k].key + "." + expected[k].image_extension) offset = position;
  }
  ASSERT_GT(offset, 0);
  std::string bytes = ReadFileOrEmpty(shard);
  for (int i = 0; i < 100; ++i) bytes[static_cast<size_t>(offset) + i] = 'X';  // Name + checksum.
  bytes[static_cast<size_t>(offset) + 148] = 'X';
  const std::string damaged = ScratchPath("damaged.tar");
  WriteFile(damaged, bytes);
  absl::Status error;
  ShardStats stats;
  const std::vector<Sample> samples = ReadShard(damaged, &error, &stats);
  ExpectSamplesMatch(samples, std::vector<ExpectedSample>(expected.begin(), expected.begin() + k),
                     damaged);
  EXPECT_EQ(error.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(stats.failure_count(FailureKind::kCorruptArchive), 1) << stats.ToString();
}

TEST(WebDatasetTest, GarbageAndEmptyFilesAreCorruptNotCrashes) {
  std::string garbage;
  uint32_t x = 12345;
  for (int i = 0; i < 100000; ++i) {
    x = x * 1103515245u + 12345u;
    garbage += static_cast<char>(x >> 24);
  }
  const std::string jpeg = ReadFileOrEmpty(testing::FixtureImagePath("landscape.jpg"));
  int i = 0;
  for (const std::string& bytes : {garbage, std::string(), jpeg, garbage.substr(0, 700)}) {
    const std::string path = ScratchPath("garbage" + std::to_string(i++) + ".tar");
    WriteFile(path, bytes);
    absl::Status error;
    ShardStats stats;
    const std::vector<Sample> samples = ReadShard(path, &error, &stats);
    EXPECT_TRUE(samples.empty());
    EXPECT_EQ(error.code(), absl::StatusCode::kDataLoss) << error;
    EXPECT_EQ(stats.failure_count(FailureKind::kCorruptArchive), 1) << stats.ToString();
  }
}

TEST(WebDatasetTest, PipeCatGivesTheSameSamples) {
  std::vector<ExpectedSample> expected;
  const std::string path = WriteFixtureShard("piped.tar", &expected);
  const std::string shard = "pipe:cat " + ShellQuote(path);
  absl::Status error;
  const std::vector<Sample> samples = ReadShard(shard, &error);
  EXPECT_TRUE(error.ok()) << error;
  ExpectSamplesMatch(samples, expected, shard);
  EXPECT_TRUE(NoChildrenLeft());
}

TEST(WebDatasetTest, FailingCommandIsAnErrorNamingIt) {
  std::vector<ExpectedSample> expected;
  const std::string path = WriteFixtureShard("piped2.tar", &expected);
  // The tar arrives whole, then the command fails: what was read is
  // delivered, and the shard still counts as failed.
  const std::string command = "cat " + ShellQuote(path) + "; exit 3";
  absl::Status error;
  ShardStats stats;
  std::vector<Sample> samples = ReadShard("pipe:" + command, &error, &stats);
  ExpectSamplesMatch(samples, expected, "pipe:" + command);
  EXPECT_EQ(error.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(error.message().find(command), std::string::npos) << error;
  EXPECT_NE(error.message().find("status 3"), std::string::npos) << error;
  EXPECT_EQ(stats.failure_count(FailureKind::kCommandFailed), 1);

  samples = ReadShard("pipe:false", &error, &stats);
  EXPECT_TRUE(samples.empty());
  EXPECT_NE(error.message().find("`false`"), std::string::npos) << error;
  EXPECT_EQ(stats.failure_count(FailureKind::kCommandFailed), 1) << stats.ToString();
  EXPECT_TRUE(NoChildrenLeft());
}

TEST(WebDatasetTest, AbandonedReaderLeavesNoZombie) {
  std::vector<ExpectedSample> expected;
  const std::string path = WriteFixtureShard("abandoned.tar", &expected);
  // After the tar the command would block forever: only a kill ends it.
  const std::string shard = "pipe:cat " + ShellQuote(path) + "; exec tail -f /dev/null";
  {
    auto reader = WebDatasetShardReader::Open(shard);
    ASSERT_TRUE(reader.ok());
    Sample sample;
    ASSERT_TRUE((*reader)->Next(&sample).value_or(false));
    EXPECT_EQ(sample.key, expected[0].key);
  }
  EXPECT_TRUE(NoChildrenLeft());
  {
    WebDatasetSource::Options options;
    options.shards = {shard, shard};
    auto source = WebDatasetSource::Create(options);
    ASSERT_TRUE(source.ok());
    Sample sample;
    ASSERT_TRUE((*source)->Next(&sample).value_or(false));
  }
  EXPECT_TRUE(NoChildrenLeft());
}

TEST(WebDatasetTest, SourceGoesOnAfterFailedShardsAndCountsThem) {
  std::vector<ExpectedSample> expected;
  const std::string good = WriteFixtureShard("good.tar", &expected);
  const size_t k = 2;
  const std::string cut = CutShard(good, "cut2.tar", k, 512 + 50, expected);
  const std::string garbage = ScratchPath("garbage.tar");
  WriteFile(garbage, std::string(5000, '\x7f'));
  WebDatasetSource::Options options;
  options.shards = {good,          ScratchPath("missing.tar"),    cut, garbage,
                    "pipe:exit 3", "pipe:cat " + ShellQuote(good)};
  auto source = WebDatasetSource::Create(options);
  ASSERT_TRUE(source.ok()) << source.status();
  const std::vector<Sample> samples = testing::ReadAll(**source);
  const SourceStats& stats = (*source)->stats();
  ASSERT_EQ(samples.size(), 2 * expected.size() + k);
  EXPECT_EQ(samples.front().shard, good);
  EXPECT_EQ(samples[expected.size()].shard, cut);
  EXPECT_EQ(samples.back().shard, options.shards.back());
  EXPECT_EQ(samples.back().key, expected.back().key);
  EXPECT_EQ(stats.samples, static_cast<int64_t>(samples.size()));
  EXPECT_EQ(stats.failure_count(FailureKind::kMissingFile), 1) << stats.ToString();
  EXPECT_EQ(stats.failure_count(FailureKind::kTruncated), 1);
  EXPECT_EQ(stats.failure_count(FailureKind::kCorruptArchive), 1);
  EXPECT_EQ(stats.failure_count(FailureKind::kCommandFailed), 1);
  EXPECT_EQ(stats.total_failures(), 4);
  ASSERT_EQ(stats.shards.size(), options.shards.size());
  int64_t sum = 0;
  for (size_t i = 0; i < stats.shards.size(); ++i) {
    EXPECT_EQ(stats.shards[i].shard, options.shards[i]);
    EXPECT_EQ(stats.shards[i].status.ok(), i == 0 || i == 5) << stats.shards[i].status;
    sum += stats.shards[i].samples;
  }
  EXPECT_EQ(sum, stats.samples);
  EXPECT_EQ(stats.shards[2].samples, static_cast<int64_t>(k));
  EXPECT_EQ(stats.shards[1].status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(NoChildrenLeft());
}

TEST(WebDatasetTest, BadOptionsAreInvalidArgument) {
  WebDatasetOptions options;
  options.max_member_bytes = 0;
  EXPECT_EQ(WebDatasetShardReader::Open("x.tar", options).status().code(),
            absl::StatusCode::kInvalidArgument);
  WebDatasetSource::Options source_options;
  source_options.reader.image_extensions.clear();
  EXPECT_EQ(WebDatasetSource::Create(source_options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
