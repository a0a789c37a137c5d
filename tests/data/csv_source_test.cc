#include "data/csv_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/data/test_shards.h"

namespace oclip {
namespace {

using ::oclip::testing::FixtureImagePath;
using ::oclip::testing::ReadAll;
using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ScratchPath;
using ::oclip::testing::WriteFile;

// A folder with images/<fixture> copies and `csv` written as data.csv in it.
std::string MakeCsvFolder(const std::string& name, const std::string& csv) {
  const std::string dir = ScratchPath(name);
  mkdir(dir.c_str(), 0755);
  mkdir((dir + "/images").c_str(), 0755);
  for (const char* image : {"landscape.jpg", "tiny.png", "wide.webp", "gray.jpg"}) {
    WriteFile(dir + "/images/" + image, ReadFileOrEmpty(FixtureImagePath(image)));
  }
  WriteFile(dir + "/data.csv", csv);
  return dir + "/data.csv";
}

absl::StatusOr<std::unique_ptr<CsvSource>> Open(const std::string& path, char separator = '\t') {
  CsvOptions options;
  options.path = path;
  options.separator = separator;
  return CsvSource::Create(options);
}

TEST(CsvSourceTest, ReadsTsvWithOpenClipDefaultsAndRelativePaths) {
  const std::string path = MakeCsvFolder(
      "tsv", "filepath\ttitle\nimages/landscape.jpg\ta mountain lake\nimages/tiny.png\ttiny\n");
  auto source = Open(path);
  ASSERT_TRUE(source.ok()) << source.status();
  const std::vector<Sample> samples = ReadAll(**source);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].key, "images/landscape.jpg");
  EXPECT_EQ(samples[0].image_path, ScratchPath("tsv/images/landscape.jpg"));
  EXPECT_TRUE(samples[0].image == ReadFileOrEmpty(FixtureImagePath("landscape.jpg")));
  EXPECT_EQ(samples[0].image_extension, "jpg");
  EXPECT_EQ(samples[0].caption, "a mountain lake");
  EXPECT_TRUE(samples[0].has_caption);
  EXPECT_EQ(samples[0].shard, path);
  EXPECT_EQ(samples[1].index_in_shard, 1);
  EXPECT_TRUE(samples[1].image == ReadFileOrEmpty(FixtureImagePath("tiny.png")));
  const SourceStats& stats = (*source)->stats();
  EXPECT_EQ(stats.samples, 2);
  EXPECT_EQ(stats.total_failures(), 0);
  ASSERT_EQ(stats.shards.size(), 1u);
  EXPECT_EQ(stats.shards[0].samples, 2);
}

TEST(CsvSourceTest, CommaCsvWithQuotesNewlinesCrlfAndOtherColumns) {
  const std::string absolute = FixtureImagePath("wide.webp");
  const std::string csv =
      absl::StrCat("\xEF\xBB\xBFid,title,filepath,extra\r\n",
                   "1,\"a lake, with mountains\",images/landscape.jpg,x\r\n",
                   "\r\n",  // Blank lines are skipped.
                   "2,\"she said \"\"hi\"\"\",\"images/tiny.png\",\"\"\r\n",
                   "3,\"two\r\nlines\",images/gray.jpg,\"a,b\"\r\n", "4,tab\there,", absolute,
                   ",y\n", "5,no newline at the end,images/tiny.png,z");
  const std::string path = MakeCsvFolder("comma", csv);
  auto source = Open(path, ',');
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ((*source)->columns(), (std::vector<std::string>{"id", "title", "filepath", "extra"}));
  const std::vector<Sample> samples = ReadAll(**source);
  ASSERT_EQ(samples.size(), 5u);
  EXPECT_EQ(samples[0].caption, "a lake, with mountains");
  EXPECT_EQ(samples[1].caption, "she said \"hi\"");
  EXPECT_EQ(samples[1].key, "images/tiny.png");
  EXPECT_EQ(samples[2].caption, "two\r\nlines");
  EXPECT_TRUE(samples[2].image == ReadFileOrEmpty(FixtureImagePath("gray.jpg")));
  EXPECT_EQ(samples[3].caption, "tab\there");
  EXPECT_EQ(samples[3].image_path, absolute);  // Absolute paths stay.
  EXPECT_TRUE(samples[3].image == ReadFileOrEmpty(absolute));
  EXPECT_EQ(samples[4].caption, "no newline at the end");
  EXPECT_EQ((*source)->stats().total_failures(), 0) << (*source)->stats().ToString();
}

TEST(CsvSourceTest, CustomColumnsAndSeparator) {
  const std::string path = MakeCsvFolder("custom", "url;caption\nimages/tiny.png;\"semi;colon\"\n");
  CsvOptions options;
  options.path = path;
  options.separator = ';';
  options.image_key = "url";
  options.caption_key = "caption";
  auto source = CsvSource::Create(options);
  ASSERT_TRUE(source.ok()) << source.status();
  const std::vector<Sample> samples = ReadAll(**source);
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].caption, "semi;colon");
}

TEST(CsvSourceTest, MissingImagesAndMalformedRowsAreCountedAndSkipped) {
  const std::string path = MakeCsvFolder("missing",
                                         "filepath\ttitle\n"
                                         "images/landscape.jpg\tok\n"
                                         "images/nope.jpg\tmissing\n"
                                         "images\ta directory\n"
                                         "images/tiny.png\ttoo\tmany\n"
                                         "images/tiny.png\n"
                                         "images/wide.webp\tok too\n");
  auto source = Open(path);
  ASSERT_TRUE(source.ok()) << source.status();
  const std::vector<Sample> samples = ReadAll(**source);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].caption, "ok");
  EXPECT_EQ(samples[1].caption, "ok too");
  EXPECT_EQ(samples[1].index_in_shard, 5);
  const SourceStats& stats = (*source)->stats();
  EXPECT_EQ(stats.failure_count(FailureKind::kMissingFile), 1) << stats.ToString();
  EXPECT_EQ(stats.failure_count(FailureKind::kUnreadableFile), 1);
  EXPECT_EQ(stats.failure_count(FailureKind::kMalformedRow), 2);
  EXPECT_EQ(stats.samples, 2);
}

TEST(CsvSourceTest, UnclosedQuoteEndsTheFileAfterTheRowsBeforeIt) {
  const std::string path = MakeCsvFolder(
      "unclosed", "filepath\ttitle\nimages/tiny.png\tfine\nimages/tiny.png\t\"never closed\n");
  auto source = Open(path);
  ASSERT_TRUE(source.ok());
  const std::vector<Sample> samples = ReadAll(**source);
  ASSERT_EQ(samples.size(), 1u);
  const SourceStats& stats = (*source)->stats();
  EXPECT_EQ(stats.failure_count(FailureKind::kMalformedRow), 1);
  ASSERT_EQ(stats.shards.size(), 1u);
  EXPECT_EQ(stats.shards[0].status.code(), absl::StatusCode::kDataLoss);
}

TEST(CsvSourceTest, HeaderErrors) {
  const std::string path = MakeCsvFolder("header", "path\tcaption\nimages/tiny.png\tx\n");
  auto source = Open(path);
  ASSERT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(source.status().message().find("filepath"), std::string::npos);
  EXPECT_NE(source.status().message().find("\"path\", \"caption\""), std::string::npos)
      << source.status();
  // A comma CSV read with the default tab separator: one column.
  EXPECT_EQ(Open(MakeCsvFolder("wrongsep", "filepath,title\na,b\n")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Open(MakeCsvFolder("empty", "")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Open(ScratchPath("no.csv")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Open(path, '"').status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CsvSourceTest, WorkersSplitRowsAndPathsOnlyMode) {
  std::string csv = "filepath\ttitle\n";
  for (int i = 0; i < 7; ++i) absl::StrAppend(&csv, "images/nope", i, ".jpg\tcaption ", i, "\n");
  const std::string path = MakeCsvFolder("workers", csv);
  std::vector<int64_t> seen;
  for (int worker = 0; worker < 3; ++worker) {
    CsvOptions options;
    options.path = path;
    options.read_images = false;  // The files do not exist; nobody looks.
    options.worker_index = worker;
    options.num_workers = 3;
    auto source = CsvSource::Create(options);
    ASSERT_TRUE(source.ok());
    for (const Sample& sample : ReadAll(**source)) {
      EXPECT_EQ(sample.index_in_shard % 3, worker);
      EXPECT_TRUE(sample.image.empty());
      EXPECT_EQ(sample.caption, absl::StrCat("caption ", sample.index_in_shard));
      seen.push_back(sample.index_in_shard);
    }
  }
  EXPECT_EQ(seen.size(), 7u);
}

}  // namespace
}  // namespace oclip
