#include "tests/core/scratch_dir.h"
#include "core/mapped_file.h"

#include <fstream>

#include <gtest/gtest.h>

namespace oclip {
namespace {

using ::oclip::testing::ScratchPath;

TEST(MappedFileTest, MapsTheWholeFile) {
  const std::string path = ScratchPath("mapped.txt");
  std::ofstream(path) << "hello mapped world";
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->view(), "hello mapped world");
  EXPECT_EQ(*ReadFileToString(path), "hello mapped world");
}

TEST(MappedFileTest, EmptyFileMapsToNothing) {
  const std::string path = ScratchPath("empty.txt");
  std::ofstream(path).close();
  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size(), 0u);
}

TEST(MappedFileTest, ErrorsSayWhatIsWrong) {
  EXPECT_EQ(MappedFile::Open("/nonexistent/file").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MappedFile::Open(::testing::TempDir()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFileToString("/nonexistent/file").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
TEST(WriteStringToFileTest, WritesWhatReadFileToStringReads) {
  const std::string path = ScratchPath("written.bin");
  const std::string contents("line\n\0binary", 13);
  ASSERT_TRUE(WriteStringToFile(path, contents).ok());
  absl::StatusOr<std::string> read = ReadFileToString(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, contents);
  ASSERT_TRUE(WriteStringToFile(path, "short").ok());  // Truncates.
  EXPECT_EQ(*ReadFileToString(path), "short");
}

TEST(WriteStringToFileTest, MissingDirectoryIsAnErrorNamingThePath) {
  const std::string path = ScratchPath("no_such_dir/file.txt");
  const absl::Status status = WriteStringToFile(path, "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_NE(status.message().find(path), std::string::npos) << status;
}

}  // namespace oclip
