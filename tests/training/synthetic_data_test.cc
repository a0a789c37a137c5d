// The synthetic training set (tests/training/synthetic_data.h): its files
// exist, decode through the model's preprocessing, and each image shows its
// label's colour.

#include "tests/training/synthetic_data.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "model/image/preprocess.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"

namespace oclip::testing {
namespace {

constexpr int kSize = 40;

std::vector<std::string> Lines(const std::string& path) {
  return absl::StrSplit(ReadFileOrEmpty(path), '\n', absl::SkipEmpty());
}

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

// The colour word of the image's most saturated pixel, from the decoded
// [0, 1] RGB planes.
std::string DominantColour(const std::vector<float>& chw) {
  const int plane = kSize * kSize;
  int best = 0;
  float best_spread = -1;
  for (int i = 0; i < plane; ++i) {
    const float r = chw[i], g = chw[plane + i], b = chw[2 * plane + i];
    const float spread = std::max({r, g, b}) - std::min({r, g, b});
    if (spread > best_spread) best_spread = spread, best = i;
  }
  const float r = chw[best], g = chw[plane + best], b = chw[2 * plane + best];
  if (r > 0.6f && g > 0.6f && b < 0.4f) return "yellow";
  if (r > g && r > b) return "red";
  if (g > r && g > b) return "green";
  return "blue";
}

// Decodes `path` through the eval preprocessing at the file's own size
// (identity mean/std: pixels in [0, 1]) and checks it shows `classname`.
void ExpectImageOf(const std::string& path, const std::string& classname) {
  PreprocessOptions options;
  options.image_size = kSize;
  options.mean = {0, 0, 0};
  options.std = {1, 1, 1};
  std::vector<float> chw(3 * kSize * kSize);
  const absl::Status status = PreprocessImageFile(path, options, chw.data());
  ASSERT_TRUE(status.ok()) << status;
  const std::string colour = classname.substr(0, classname.find(' '));
  EXPECT_EQ(DominantColour(chw), colour) << path << " should show a " << classname;
}

TEST(SyntheticDataTest, WritesALabelledCsvAnImageFolderAndClassNames) {
  const std::string dir = ScratchPath("synthetic");
  auto dataset = WriteSyntheticDataset(dir, 24, 16, kSize, 7);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  ASSERT_EQ(dataset->classnames.size(), 8u);
  EXPECT_EQ(Lines(dataset->classnames_path), dataset->classnames);

  // ImageFolder's class order (sorted folders) is the class-name order.
  std::vector<std::string> folders;
  for (const std::string& name : dataset->classnames) {
    folders.push_back(absl::StrReplaceAll(name, {{" ", "_"}}));
  }
  EXPECT_EQ(ListDir(dataset->imagenet_val_dir), folders);
  int val_images = 0;
  for (size_t c = 0; c < folders.size(); ++c) {
    for (const std::string& file : ListDir(dataset->imagenet_val_dir + "/" + folders[c])) {
      ExpectImageOf(dataset->imagenet_val_dir + "/" + folders[c] + "/" + file,
                    dataset->classnames[c]);
      ++val_images;
    }
  }
  EXPECT_EQ(val_images, 16);

  std::map<std::string, int> per_class;
  for (const auto& [csv, rows] :
       {std::make_pair(dataset->csv_path, 24), std::make_pair(dataset->val_csv_path, 16)}) {
    const std::vector<std::string> lines = Lines(csv);
    ASSERT_EQ(lines.size(), static_cast<size_t>(rows) + 1) << csv;
    EXPECT_EQ(lines[0], "filepath\ttitle");
    for (size_t i = 1; i < lines.size(); ++i) {
      const std::vector<std::string> fields = absl::StrSplit(lines[i], '\t');
      ASSERT_EQ(fields.size(), 2u) << lines[i];
      const std::string prefix = "a photo of a ";
      ASSERT_EQ(fields[1].rfind(prefix, 0), 0u) << fields[1];
      const std::string classname =
          fields[1].substr(prefix.size(), fields[1].size() - prefix.size() - 1);
      ASSERT_NE(std::find(dataset->classnames.begin(), dataset->classnames.end(), classname),
                dataset->classnames.end())
          << fields[1];
      if (csv == dataset->csv_path) ++per_class[classname];
      ExpectImageOf(fields[0], classname);
    }
  }
  // Balanced: 24 samples over 8 classes.
  for (const std::string& name : dataset->classnames) EXPECT_EQ(per_class[name], 3) << name;
}

TEST(SyntheticDataTest, IsDeterministicForASeed) {
  auto a = WriteSyntheticDataset(ScratchPath("seed_a"), 4, 8, kSize, 3);
  auto b = WriteSyntheticDataset(ScratchPath("seed_b"), 4, 8, kSize, 3);
  auto c = WriteSyntheticDataset(ScratchPath("seed_c"), 4, 8, kSize, 4);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (const char* file :
       {"/train/000000.jpg", "/train/000001.png", "/val/green_circle/000002.png"}) {
    const std::string bytes_a = ReadFileOrEmpty(ScratchPath("seed_a") + file);
    ASSERT_FALSE(bytes_a.empty()) << file;
    EXPECT_EQ(bytes_a, ReadFileOrEmpty(ScratchPath("seed_b") + file)) << file;
    EXPECT_NE(bytes_a, ReadFileOrEmpty(ScratchPath("seed_c") + file)) << file;
  }
}

TEST(SyntheticDataTest, RejectsBadArguments) {
  EXPECT_EQ(WriteSyntheticDataset(ScratchPath("bad"), 0, 1, kSize, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSyntheticDataset(ScratchPath("bad"), 1, 0, kSize, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSyntheticDataset(ScratchPath("bad"), 1, 1, 8, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip::testing
