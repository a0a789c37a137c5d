#include "data/image_folder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

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
using ::testing::ElementsAre;

std::string MakeTree(const std::string& name) {
  const std::string root = ScratchPath(name);
  for (const char* dir : {"", "/dogs", "/cats", "/cats/kittens", "/.hidden"}) {
    mkdir((root + dir).c_str(), 0755);
  }
  const std::string png = ReadFileOrEmpty(FixtureImagePath("tiny.png"));
  const std::string jpg = ReadFileOrEmpty(FixtureImagePath("gray.jpg"));
  WriteFile(root + "/dogs/b.PNG", png);
  WriteFile(root + "/dogs/a.jpeg", jpg);
  WriteFile(root + "/dogs/a.txt", "a dog");
  WriteFile(root + "/cats/kittens/z.webp", ReadFileOrEmpty(FixtureImagePath("wide.webp")));
  WriteFile(root + "/cats/x.Jpg", jpg);
  WriteFile(root + "/cats/x.txt", "");
  WriteFile(root + "/top.gif", png);  // Bytes need not match the name.
  WriteFile(root + "/notes.md", "not an image");
  WriteFile(root + "/.hidden/h.jpg", jpg);
  WriteFile(root + "/dogs/._b.PNG", "macOS resource fork");
  symlink("..", (root + "/cats/loop").c_str());  // A cycle must not hang the walk.
  return root;
}

TEST(ImageFolderTest, RecursesInSortedOrderWithSidecarCaptions) {
  const std::string root = MakeTree("tree");
  ImageFolderOptions options;
  options.root = root + "/";
  auto source = ImageFolderSource::Create(options);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_THAT((*source)->files(), ElementsAre("cats/kittens/z.webp", "cats/x.Jpg", "dogs/a.jpeg",
                                              "dogs/b.PNG", "top.gif"));
  const std::vector<Sample> samples = ReadAll(**source);
  ASSERT_EQ(samples.size(), 5u);
  EXPECT_EQ(samples[0].key, "cats/kittens/z");
  EXPECT_EQ(samples[0].image_extension, "webp");
  EXPECT_TRUE(samples[0].image == ReadFileOrEmpty(FixtureImagePath("wide.webp")));
  EXPECT_FALSE(samples[0].has_caption);
  EXPECT_EQ(samples[1].key, "cats/x");
  EXPECT_TRUE(samples[1].has_caption);  // An empty sidecar is an empty caption.
  EXPECT_EQ(samples[1].caption, "");
  EXPECT_EQ(samples[2].caption, "a dog");
  EXPECT_EQ(samples[2].image_path, root + "/dogs/a.jpeg");
  EXPECT_EQ(samples[3].image_extension, "png");
  EXPECT_EQ(samples[4].index_in_shard, 4);
  EXPECT_EQ(samples[4].shard, root);
  EXPECT_EQ((*source)->stats().samples, 5);
  EXPECT_EQ((*source)->stats().total_failures(), 0);
}

TEST(ImageFolderTest, VanishedFileIsCounted) {
  const std::string root = MakeTree("vanish");
  ImageFolderOptions options;
  options.root = root;
  auto source = ImageFolderSource::Create(options);
  ASSERT_TRUE(source.ok());
  ASSERT_EQ(unlink((root + "/dogs/a.jpeg").c_str()), 0);
  const std::vector<Sample> samples = ReadAll(**source);
  EXPECT_EQ(samples.size(), 4u);
  EXPECT_EQ((*source)->stats().failure_count(FailureKind::kMissingFile), 1);
}

TEST(ImageFolderTest, WorkersSplitFiles) {
  const std::string root = MakeTree("split");
  std::vector<std::string> keys;
  for (int worker = 0; worker < 2; ++worker) {
    ImageFolderOptions options;
    options.root = root;
    options.worker_index = worker;
    options.num_workers = 2;
    options.read_images = false;
    auto source = ImageFolderSource::Create(options);
    ASSERT_TRUE(source.ok());
    for (const Sample& sample : ReadAll(**source)) {
      EXPECT_EQ(sample.index_in_shard % 2, worker);
      EXPECT_TRUE(sample.image.empty());
      keys.push_back(sample.key);
    }
  }
  EXPECT_EQ(keys.size(), 5u);
}

TEST(ImageFolderTest, RootErrors) {
  ImageFolderOptions options;
  options.root = ScratchPath("no-such-folder");
  EXPECT_EQ(ImageFolderSource::Create(options).status().code(), absl::StatusCode::kNotFound);
  options.root = FixtureImagePath("tiny.png");
  EXPECT_EQ(ImageFolderSource::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.root = testing::ScratchDir();
  options.num_workers = 0;
  EXPECT_EQ(ImageFolderSource::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
