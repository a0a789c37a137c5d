#include "index/embedding_files.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/npy.h"
#include "gtest/gtest.h"
#include "tests/index/test_data.h"

namespace oclip {
namespace index {
namespace {

std::string Join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

TEST(EmbeddingFilesTest, ReadsPartitionsInNumericOrderAcrossFileBoundaries) {
  const std::string dir = MakeTempDir("order");
  ClusteredGenerator gen(/*dim=*/8, /*clusters=*/4, /*rank=*/2, /*spread=*/1.0f, /*seed=*/1);
  // 11 partitions so that img_emb_10 must sort after img_emb_9.
  std::vector<float> all;
  for (int i = 0; i <= 10; ++i) {
    const int64_t rows = 3 + i;
    std::vector<float> part = gen.Sample(rows);
    ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_" + std::to_string(i) + ".npy"), {rows, 8},
                                part)
                    .ok());
    all.insert(all.end(), part.begin(), part.end());
  }
  auto files = EmbeddingFiles::Open(dir, "img_emb");
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ((*files)->dim(), 8);
  EXPECT_EQ((*files)->rows(), static_cast<int64_t>(all.size() / 8));
  EXPECT_EQ((*files)->files().back().path, Join(dir, "img_emb_10.npy"));

  std::vector<float> got(all.size());
  ASSERT_TRUE((*files)->ReadRows(0, (*files)->rows(), got.data()).ok());
  EXPECT_EQ(got, all);

  // A range straddling partitions, and rows by id in any order.
  std::vector<float> mid(20 * 8);
  ASSERT_TRUE((*files)->ReadRows(5, 20, mid.data()).ok());
  EXPECT_EQ(mid, std::vector<float>(all.begin() + 5 * 8, all.begin() + 25 * 8));
  const std::vector<int64_t> ids = {40, 0, 7, 40};
  std::vector<float> by_id(ids.size() * 8);
  ASSERT_TRUE((*files)->ReadRowsById(ids, by_id.data()).ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    for (int j = 0; j < 8; ++j) EXPECT_EQ(by_id[i * 8 + j], all[ids[i] * 8 + j]);
  }
  EXPECT_EQ((*files)->ReadRows((*files)->rows() - 1, 2, got.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EmbeddingFilesTest, ReadsFloat16WithinHalfPrecision) {
  const std::string dir = MakeTempDir("fp16");
  ClusteredGenerator gen(16, 3, 2, 1.0f, 2);
  std::vector<float> values = gen.Sample(50);
  values[0] = 0.0f;
  values[1] = -1.0f;
  values[2] = 3.0e-6f;  // subnormal in half precision
  ASSERT_TRUE(WriteNpyFloat16(Join(dir, "text_emb_0.npy"), {50, 16}, values).ok());
  auto header = ReadNpyMatrixHeader(Join(dir, "text_emb_0.npy"));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->dtype, NpyDtype::kFloat16);

  auto files = EmbeddingFiles::Open(dir, "text_emb");
  ASSERT_TRUE(files.ok()) << files.status();
  std::vector<float> got(values.size());
  ASSERT_TRUE((*files)->ReadRows(0, 50, got.data()).ok());
  for (size_t i = 0; i < values.size(); ++i) {
    // Half precision: 11 significant bits, subnormal step 2^-24.
    const float tolerance = std::max(std::fabs(values[i]) * std::ldexp(1.0f, -11),
                                     std::ldexp(1.0f, -24));
    EXPECT_NEAR(got[i], values[i], tolerance) << i;
  }
}

TEST(EmbeddingFilesTest, DimensionMismatchIsInvalidArgument) {
  const std::string dir = MakeTempDir("dims");
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_0.npy"), {2, 4}, std::vector<float>(8)).ok());
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_1.npy"), {2, 5}, std::vector<float>(10)).ok());
  auto files = EmbeddingFiles::Open(dir, "img_emb");
  EXPECT_EQ(files.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(files.status().message().find("img_emb_1.npy"), std::string::npos)
      << files.status();
}

TEST(EmbeddingFilesTest, ErrorsForMissingEmptyAndCorruptInput) {
  const std::string dir = MakeTempDir("errors");
  EXPECT_EQ(EmbeddingFiles::Open(Join(dir, "nope"), "img_emb").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(EmbeddingFiles::Open(dir, "img_emb").status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_0.npy"), {0, 4}, {}).ok());
  EXPECT_EQ(EmbeddingFiles::Open(dir, "img_emb").status().code(),
            absl::StatusCode::kInvalidArgument);

  // Truncated data.
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "img_emb_1.npy"), {3, 4}, std::vector<float>(12)).ok());
  std::filesystem::resize_file(Join(dir, "img_emb_1.npy"),
                               std::filesystem::file_size(Join(dir, "img_emb_1.npy")) - 4);
  EXPECT_EQ(EmbeddingFiles::Open(dir, "img_emb").status().code(), absl::StatusCode::kDataLoss);

  // Not an .npy at all, and the wrong dtype.
  std::ofstream(Join(dir, "junk.npy")) << "hello";
  EXPECT_EQ(ReadNpyMatrixHeader(Join(dir, "junk.npy")).status().code(),
            absl::StatusCode::kDataLoss);
  ASSERT_TRUE(WriteNpyFloat32(Join(dir, "vec.npy"), {4}, std::vector<float>(4)).ok());
  EXPECT_EQ(ReadNpyMatrixHeader(Join(dir, "vec.npy")).status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace index
}  // namespace oclip
