#include "tests/core/scratch_dir.h"
#include "core/npy.h"

#include <fstream>

#include <gtest/gtest.h>

namespace oclip {
namespace {

using ::oclip::testing::ScratchPath;

TEST(NpyTest, RoundTripsAndHasAnAlignedNumpyHeader) {
  const std::string path = ScratchPath("features.npy");
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1e-3f};
  ASSERT_TRUE(WriteNpyFloat32(path, {2, 3}, values).ok());
  auto read = ReadNpyFloat32(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(read->values, values);

  std::ifstream in(path, std::ios::binary);
  std::string header(128, '\0');
  in.read(header.data(), 128);
  EXPECT_EQ(header.substr(0, 6), "\x93NUMPY");
  const size_t data_offset = 10 + static_cast<unsigned char>(header[8]) +
                             256 * static_cast<unsigned char>(header[9]);
  EXPECT_EQ(data_offset % 64, 0u);
  EXPECT_NE(header.find("'shape': (2, 3), }"), std::string::npos) << header;
}

TEST(NpyTest, OneDimensionalShapeHasATrailingComma) {
  const std::string path = ScratchPath("vector.npy");
  ASSERT_TRUE(WriteNpyFloat32(path, {3}, std::vector<float>{1, 2, 3}).ok());
  std::ifstream in(path, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(content.find("'shape': (3,), }"), std::string::npos);
}

TEST(NpyTest, RejectsMismatchedShapeAndCorruptFiles) {
  const std::string path = ScratchPath("bad.npy");
  EXPECT_EQ(WriteNpyFloat32(path, {2, 2}, std::vector<float>{1, 2, 3}).code(),
            absl::StatusCode::kInvalidArgument);
  std::ofstream(path, std::ios::binary) << "not numpy at all";
  EXPECT_EQ(ReadNpyFloat32(path).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace oclip
