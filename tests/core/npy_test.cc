#include "tests/core/scratch_dir.h"
#include "core/npy.h"

#include <cstring>
#include <fstream>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_replace.h"
#include "core/mapped_file.h"

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

// The header numpy writes for np.zeros((2, 3), '<f2') in format 2.0 (a
// 4-byte header length), as numpy.lib.format.write_array(version=(2, 0))
// lays it out.
TEST(NpyHeaderTest, ParsesFormatTwoHeaders) {
  std::string dict = "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }";
  dict.append(64 - (12 + dict.size() + 1) % 64, ' ');
  dict.push_back('\n');
  std::string bytes("\x93NUMPY\x02\x00", 8);
  const uint32_t length = static_cast<uint32_t>(dict.size());
  bytes.append(reinterpret_cast<const char*>(&length), 4);
  bytes += dict;
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(bytes);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->dtype, NpyDtype::kFloat16);
  EXPECT_EQ(header->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(header->data_offset, bytes.size());
  EXPECT_EQ(header->data_offset % 64, 0u);
}

TEST(NpyHeaderTest, WrittenHeadersParseBackAtTheRequestedSize) {
  absl::StatusOr<std::string> fixed = NpyHeaderBytes(NpyDtype::kFloat32, {123456, 512}, 128);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  EXPECT_EQ(fixed->size(), 128u);
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(*fixed);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->dtype, NpyDtype::kFloat32);
  EXPECT_EQ(header->shape, (std::vector<int64_t>{123456, 512}));
  EXPECT_EQ(header->data_offset, 128u);
  // Too small a fixed size is an error, not a truncated header.
  EXPECT_EQ(NpyHeaderBytes(NpyDtype::kFloat32, {1, 2}, 32).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NpyHeaderTest, RejectsWhatItCannotRead) {
  const std::string good = *NpyHeaderBytes(NpyDtype::kFloat16, {4});
  for (const std::string& bad : {
           std::string("\x93NUMPX\x01\x00", 8) + good.substr(8),  // magic
           good.substr(0, good.size() - 10),                        // truncated
           absl::StrReplaceAll(good, {{"<f2", "<i8"}}),             // dtype
           absl::StrReplaceAll(good, {{"False", "True "}}),         // Fortran order
           absl::StrReplaceAll(good, {{"(4,)", "(-4,)"}}),          // shape
       }) {
    EXPECT_EQ(ParseNpyHeader(bad).status().code(), absl::StatusCode::kDataLoss) << bad;
  }
}

TEST(NpyTest, Float16FilesHoldTheRoundedValues) {
  const std::string path = ScratchPath("half.npy");
  ASSERT_TRUE(WriteNpyFloat16(path, {2, 2}, std::vector<float>{1.0f, 0.1f, -2.5f, 65504.0f}).ok());
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(*bytes);
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(bytes->size(), header->data_offset + 8);
  std::vector<uint16_t> halves(4);
  std::memcpy(halves.data(), bytes->data() + header->data_offset, 8);
  // IEEE binary16 bit patterns of the four values (0.1 rounds to 0x2E66).
  EXPECT_EQ(halves, (std::vector<uint16_t>{0x3C00, 0x2E66, 0xC100, 0x7BFF}));
  EXPECT_EQ(WriteNpyFloat16(path, {3}, std::vector<float>{1.0f}).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
