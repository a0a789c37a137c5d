// embed/npy_rows.h: streamed .npy matrices read back by the reader and by
// core/npy.h's float32 reader (another code path), and float16 conversion
// against c10::Half (LibTorch's, the conversion numpy's astype matches).

#include "embed/npy_rows.h"

#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/npy.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/data/test_shards.h"

namespace oclip {
namespace {

using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ScratchPath;

std::vector<float> RandomValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  return values;
}

TEST(NpyRowsTest, Float32RowsAppendedInBlocksReadBackByBothReaders) {
  const int64_t dim = 5;
  const std::vector<float> values = RandomValues(11 * dim, 1);
  const std::string path = ScratchPath("rows32.npy");
  auto writer = NpyRowWriter::Create(path, NpyDtype::kFloat32, dim);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(values.data(), 4).ok());
  ASSERT_TRUE((*writer)->Append(values.data() + 4 * dim, 0).ok());
  ASSERT_TRUE((*writer)->Append(values.data() + 4 * dim, 7).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_EQ((*writer)->Append(values.data(), 1).code(), absl::StatusCode::kInvalidArgument);

  auto rows = ReadNpyRows(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->dtype, NpyDtype::kFloat32);
  EXPECT_EQ(rows->rows, 11);
  EXPECT_EQ(rows->dim, dim);
  EXPECT_EQ(rows->values, values);
  auto core = ReadNpyFloat32(path);
  ASSERT_TRUE(core.ok()) << core.status();
  EXPECT_EQ(core->shape, (std::vector<int64_t>{11, dim}));
  EXPECT_EQ(core->values, values);
  // The header is padded to the fixed size numpy's alignment allows.
  const std::string bytes = ReadFileOrEmpty(path);
  EXPECT_EQ(bytes.size(), kNpyRowsHeaderBytes + values.size() * sizeof(float));
  EXPECT_EQ(bytes[kNpyRowsHeaderBytes - 1], '\n');
}

TEST(NpyRowsTest, EmptyMatrixKeepsItsWidth) {
  const std::string path = ScratchPath("empty.npy");
  auto writer = NpyRowWriter::Create(path, NpyDtype::kFloat16, 8);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto rows = ReadNpyRows(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->rows, 0);
  EXPECT_EQ(rows->dim, 8);
  EXPECT_EQ(rows->dtype, NpyDtype::kFloat16);
}

TEST(NpyRowsTest, HalfConversionMatchesC10Half) {
  std::vector<float> values = RandomValues(20000, 2);
  for (float& v : values) v *= 1e-3f;  // Subnormal halves too.
  for (float v : {0.0f, -0.0f, 1.0f, 65504.0f, 65520.0f, 1e-8f, 5.96e-8f, 2.98e-8f, 1e30f,
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  0.00006103515625f, 1.0009765625f, 1.00048828125f, 1.00146484375f}) {
    values.push_back(v);
    values.push_back(-v);
  }
  for (float v : values) {
    const c10::Half expected(v);
    EXPECT_EQ(FloatToHalf(v), expected.x) << v;
    EXPECT_EQ(HalfToFloat(expected.x), static_cast<float>(expected)) << v;
  }
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  // Every half value survives the round trip.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToHalf(f), h);
    EXPECT_EQ(f, static_cast<float>(c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits())));
  }
}

TEST(NpyRowsTest, Float16FileHoldsTheRoundedValues) {
  const int64_t dim = 3;
  const std::vector<float> values = RandomValues(4 * dim, 3);
  std::vector<uint16_t> halves;
  for (float v : values) halves.push_back(c10::Half(v).x);
  const std::string path = ScratchPath("rows16.npy");
  auto writer = NpyRowWriter::Create(path, NpyDtype::kFloat16, dim);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(halves.data(), 4).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto rows = ReadNpyRows(path);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->values.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(rows->values[i], static_cast<float>(c10::Half(values[i])));
  }
  EXPECT_EQ(ReadNpyFloat32(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(NpyRowsTest, ReaderRejectsWhatItCannotRead) {
  EXPECT_EQ(ReadNpyRows(ScratchPath("missing.npy")).status().code(), absl::StatusCode::kNotFound);
  const std::string garbage = ScratchPath("garbage.npy");
  testing::WriteFile(garbage, "definitely not numpy");
  EXPECT_EQ(ReadNpyRows(garbage).status().code(), absl::StatusCode::kDataLoss);
  // A row short: the size does not match the shape.
  const std::string path = ScratchPath("short.npy");
  auto writer = NpyRowWriter::Create(path, NpyDtype::kFloat32, 2);
  ASSERT_TRUE(writer.ok());
  const float values[4] = {1, 2, 3, 4};
  ASSERT_TRUE((*writer)->Append(values, 2).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  const std::string bytes = ReadFileOrEmpty(path);
  testing::WriteFile(path, bytes.substr(0, bytes.size() - 4));
  EXPECT_EQ(ReadNpyRows(path).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseNpyDtype("float64").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
