#include "data/open_source.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>

#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/data/test_shards.h"

namespace oclip {
namespace {

using ::oclip::testing::ReadAll;
using ::oclip::testing::ScratchPath;

TEST(OpenSourceTest, ParsesDatasetTypes) {
  EXPECT_EQ(*ParseDatasetType("auto"), DatasetType::kAuto);
  EXPECT_EQ(*ParseDatasetType("webdataset"), DatasetType::kWebDataset);
  EXPECT_EQ(*ParseDatasetType("csv"), DatasetType::kCsv);
  EXPECT_EQ(*ParseDatasetType("imagefolder"), DatasetType::kImageFolder);
  EXPECT_EQ(ParseDatasetType("synthetic").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OpenSourceTest, AutoPicksTheKindAndAllReadAlike) {
  std::vector<testing::ExpectedSample> expected;
  testing::WriteFixtureShard("auto-0.tar", &expected);
  testing::WriteFixtureShard("auto-1.tar", &expected);
  OpenSourceOptions options;
  options.worker_index = 1;
  options.num_workers = 2;
  auto wds = OpenSampleSource(ScratchPath("auto-{0..1}.tar"), options);
  ASSERT_TRUE(wds.ok()) << wds.status();
  const std::vector<Sample> samples = ReadAll(**wds);
  ASSERT_EQ(samples.size(), expected.size());
  EXPECT_EQ(samples[0].shard, ScratchPath("auto-1.tar"));

  const std::string folder = ScratchPath("auto-folder");
  mkdir(folder.c_str(), 0755);
  testing::WriteFile(folder + "/a.png", "not really a png");
  auto images = OpenSampleSource(folder);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(ReadAll(**images).size(), 1u);

  testing::WriteFile(folder + "/list.tsv", "filepath\ttitle\na.png\tx\n");
  auto csv = OpenSampleSource(folder + "/list.tsv");
  ASSERT_TRUE(csv.ok()) << csv.status();
  const std::vector<Sample> rows = ReadAll(**csv);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].image, "not really a png");

  EXPECT_EQ(OpenSampleSource(folder + "/a.png").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenSampleSource("x/{1..0}.tar").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
