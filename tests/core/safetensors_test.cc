#include "tests/core/scratch_dir.h"
#include "core/safetensors.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

namespace oclip {
namespace {

using ::oclip::testing::ScratchPath;

std::string TempPath(const std::string& name) { return ScratchPath(name); }

std::string WriteBytes(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// A file with an explicit header, for malformed-header cases.
std::string WithHeader(const std::string& header, size_t data_bytes) {
  uint64_t length = header.size();
  std::string bytes(reinterpret_cast<const char*>(&length), 8);
  return bytes + header + std::string(data_bytes, '\0');
}

TEST(SafetensorsTest, RoundTripsTensorsAndMetadata) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<int64_t> b = {-7};
  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(WriteSafetensors(
                  path,
                  {{"a", DType::kF32, {2, 3},
                    absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(a.data()), 24)},
                   {"b", DType::kI64, {}, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(b.data()), 8)}},
                  {{"format", "pt"}})
                  .ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ((*reader)->metadata().at("format"), "pt");
  auto view = (*reader)->Get("a");
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->dtype, DType::kF32);
  EXPECT_EQ(view->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> read(6);
  std::memcpy(read.data(), view->data, 24);
  EXPECT_EQ(read, a);
  EXPECT_EQ((*reader)->Get("b")->num_elements(), 1);
  EXPECT_EQ((*reader)->Get("c").status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, ReadsTheReferenceFixture) {
  const char* dir = std::getenv("OCLIP_REFERENCE_DIR");
  const std::string path =
      std::string(dir && dir[0] ? dir : OCLIP_REFERENCE_DIR_DEFAULT) + "/tokens.safetensors";
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto tokens = (*reader)->Get("tokens");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->dtype, DType::kI64);
  EXPECT_EQ(tokens->shape, (std::vector<int64_t>{14, 77}));
  int64_t first = 0;
  std::memcpy(&first, tokens->data, 8);
  EXPECT_EQ(first, 49406);  // <start_of_text>
}

TEST(SafetensorsTest, RejectsMalformedFilesWithDataLoss) {
  const std::pair<const char*, std::string> cases[] = {
      {"short", std::string("\x01\x02", 2)},
      {"huge_header_length", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10)},
      {"not_json", WithHeader("{nope", 0)},
      {"not_object", WithHeader("[1,2]", 0)},
      {"bad_dtype", WithHeader(R"({"x":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", 4)},
      {"size_mismatch", WithHeader(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)},
      {"beyond_end", WithHeader(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)},
      {"negative_dim", WithHeader(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)},
      {"overlap", WithHeader(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})", 8)},
      {"missing_fields", WithHeader(R"({"x":{"dtype":"F32"}})", 0)},
      // Found by fuzz_checkpoint: after a 0 the element count stays 0, and a
      // dimension of 2^63 or more became a negative int64_t shape that
      // LibTorch threw on (tests/fuzz/regressions/checkpoint/).
      {"zero_then_huge_dim",
       WithHeader(R"({"x":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}})",
                  0)},
      {"zero_then_max_dim",
       WithHeader(R"({"x":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}})",
                  0)},
  };
  for (const auto& [name, bytes] : cases) {
    const std::string path = WriteBytes(std::string(name) + ".safetensors", bytes);
    auto reader = SafetensorsReader::Open(path);
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kDataLoss) << name << ": " << reader.status();
    EXPECT_NE(reader.status().message().find(path), std::string::npos) << name;
  }
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_EQ(SafetensorsReader::Open("/nonexistent.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace oclip
