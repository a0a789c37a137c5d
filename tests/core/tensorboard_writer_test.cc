#include "core/tensorboard_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/crc32c.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"

namespace oclip {
namespace {

using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::RunCommand;
using ::oclip::testing::ScratchPath;

// Debian's interpreter, the one with python3-protobuf.
constexpr char kPython[] = "/usr/bin/python3";

struct Logged {
  std::string tag;
  double value;
  int64_t step;
};

// Values exactly representable as floats, so that the stored float compares
// exactly; a negative step and a multi-byte varint step included.
const std::vector<Logged>& Scalars() {
  static const std::vector<Logged> scalars = {
      {"train/loss", 2.5, 0},          {"train/lr", 1.52587890625e-05, 1},
      {"train/loss", -0.125, 300},     {"train/logit_scale", 100.0, 1LL << 40},
      {"val/zeroshot_top1", 0.75, -7}, {"é/unicode tag", 3.0e38, 5}};
  return scalars;
}

double NowSeconds() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The byte offsets where records start and the file's end, found by walking
// the length fields.
std::vector<size_t> RecordBoundaries(const std::string& bytes) {
  std::vector<size_t> boundaries = {0};
  size_t pos = 0;
  while (pos + 12 <= bytes.size()) {
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i)
      length |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[pos + i])) << (8 * i);
    pos += 16 + length;
    boundaries.push_back(pos);
  }
  return boundaries;
}

class TensorBoardWriterTest : public ::testing::Test {
 protected:
  // Writes Scalars() into a fresh folder `name`/nested and returns the file.
  std::string WriteScalars(const std::string& name) {
    const std::string dir = ScratchPath(name) + "/nested/logs";
    before_ = NowSeconds();
    auto writer = TensorBoardWriter::Open(dir);
    EXPECT_TRUE(writer.ok()) << writer.status();
    if (!writer.ok()) return "";
    for (const Logged& s : Scalars()) {
      const absl::Status status = (*writer)->AddScalar(s.tag, s.value, s.step);
      EXPECT_TRUE(status.ok()) << status;
    }
    const absl::Status flushed = (*writer)->Flush();
    EXPECT_TRUE(flushed.ok()) << flushed;
    after_ = NowSeconds();
    const std::string path = (*writer)->path();
    EXPECT_TRUE(absl::StartsWith(path, dir + "/events.out.tfevents.")) << path;
    return path;
  }

  double before_ = 0, after_ = 0;
};

TEST_F(TensorBoardWriterTest, RoundTripsScalars) {
  const std::string path = WriteScalars("round_trip");
  auto scalars = ReadTensorBoardScalars(path);
  ASSERT_TRUE(scalars.ok()) << scalars.status();
  ASSERT_EQ(scalars->size(), Scalars().size());
  for (size_t i = 0; i < Scalars().size(); ++i) {
    const ScalarEvent& read = (*scalars)[i];
    EXPECT_EQ(read.tag, Scalars()[i].tag);
    EXPECT_EQ(read.value, static_cast<double>(static_cast<float>(Scalars()[i].value)));
    EXPECT_EQ(read.step, Scalars()[i].step);
    EXPECT_GE(read.wall_time, before_ - 1e-3);
    EXPECT_LE(read.wall_time, after_ + 1e-3);
  }
}

TEST_F(TensorBoardWriterTest, FirstRecordIsTheFileVersion) {
  const std::string bytes = ReadFileOrEmpty(WriteScalars("file_version"));
  const std::vector<size_t> boundaries = RecordBoundaries(bytes);
  ASSERT_GE(boundaries.size(), 2u);
  EXPECT_EQ(boundaries.back(), bytes.size());
  EXPECT_EQ(boundaries.size(), Scalars().size() + 2);  // file_version + one per scalar + end.
  const std::string first = bytes.substr(12, boundaries[1] - 16);
  // Field 3 (file_version), length-delimited, 13 bytes.
  EXPECT_TRUE(absl::StrContains(first, std::string("\x1a\x0d") + "brain.Event:2"));
}

TEST_F(TensorBoardWriterTest, EveryFlippedByteIsDataLoss) {
  const std::string bytes = ReadFileOrEmpty(WriteScalars("flipped"));
  ASSERT_FALSE(bytes.empty());
  const std::string corrupt = ScratchPath("flipped.tfevents");
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string changed = bytes;
    changed[i] = static_cast<char>(changed[i] ^ 0x10);
    WriteFile(corrupt, changed);
    auto scalars = ReadTensorBoardScalars(corrupt);
    EXPECT_EQ(scalars.status().code(), absl::StatusCode::kDataLoss) << "byte " << i;
  }
}

TEST_F(TensorBoardWriterTest, TruncationIsDataLossExceptAtRecordBoundaries) {
  const std::string bytes = ReadFileOrEmpty(WriteScalars("truncated"));
  const std::vector<size_t> boundaries = RecordBoundaries(bytes);
  const std::string truncated = ScratchPath("truncated.tfevents");
  for (size_t size = 0; size < bytes.size(); ++size) {
    WriteFile(truncated, bytes.substr(0, size));
    auto scalars = ReadTensorBoardScalars(truncated);
    const bool boundary = std::find(boundaries.begin(), boundaries.end(), size) != boundaries.end();
    if (boundary) {
      // Whole records: the scalars of those records, nothing else.
      ASSERT_TRUE(scalars.ok()) << size << ": " << scalars.status();
      const size_t records =
          std::find(boundaries.begin(), boundaries.end(), size) - boundaries.begin();
      EXPECT_EQ(scalars->size(), records == 0 ? 0 : records - 1) << size;
    } else {
      EXPECT_EQ(scalars.status().code(), absl::StatusCode::kDataLoss) << "size " << size;
    }
  }
}

TEST_F(TensorBoardWriterTest, MalformedEventWithValidCrcsIsDataLoss) {
  // A record whose framing is right but whose data is not an Event: a
  // length-delimited field that claims more bytes than there are.
  const std::string path = ScratchPath("malformed.tfevents");
  WriteFile(path, FrameTfRecord(std::string("\x2a\x7f\x01", 3)));
  EXPECT_EQ(ReadTensorBoardScalars(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(TensorBoardWriterTest, AnIndependentPythonReaderAgrees) {
  if (RunCommand({kPython, "-c", "import google.protobuf"}).exit_code != 0) {
    GTEST_SKIP() << kPython << " cannot import google.protobuf (Debian: python3-protobuf)";
  }
  const std::string path = WriteScalars("python");
  const auto run =
      RunCommand({kPython, std::string(OCLIP_SOURCE_DIR) + "/tests/core/read_tfevents.py", path});
  ASSERT_EQ(run.exit_code, 0) << run.command << "\n" << run.err;
  const nlohmann::json parsed = nlohmann::json::parse(run.out);
  EXPECT_EQ(parsed.at("file_version"), "brain.Event:2");
  const auto& scalars = parsed.at("scalars");
  ASSERT_EQ(scalars.size(), Scalars().size());
  for (size_t i = 0; i < Scalars().size(); ++i) {
    EXPECT_EQ(scalars[i][0].get<std::string>(), Scalars()[i].tag);
    EXPECT_EQ(scalars[i][1].get<double>(),
              static_cast<double>(static_cast<float>(Scalars()[i].value)));
    EXPECT_EQ(scalars[i][2].get<int64_t>(), Scalars()[i].step);
    EXPECT_GE(scalars[i][3].get<double>(), before_ - 1e-3);
    EXPECT_LE(scalars[i][3].get<double>(), after_ + 1e-3);
  }
  // And the Python reader itself sees corruption (it is a real check).
  std::string bytes = ReadFileOrEmpty(path);
  bytes[bytes.size() - 5] ^= 1;
  WriteFile(ScratchPath("python_corrupt.tfevents"), bytes);
  EXPECT_NE(RunCommand({kPython, std::string(OCLIP_SOURCE_DIR) + "/tests/core/read_tfevents.py",
                        ScratchPath("python_corrupt.tfevents")})
                .exit_code,
            0);
}

TEST_F(TensorBoardWriterTest, WritersNeverShareAFile) {
  const std::string dir = ScratchPath("two_writers");
  auto a = TensorBoardWriter::Open(dir);
  auto b = TensorBoardWriter::Open(dir);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->path(), (*b)->path());
}

TEST_F(TensorBoardWriterTest, DestructionFlushes) {
  std::string path;
  {
    auto writer = TensorBoardWriter::Open(ScratchPath("destroyed"));
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->AddScalar("loss", 1.0, 3).ok());
    path = (*writer)->path();
  }
  auto scalars = ReadTensorBoardScalars(path);
  ASSERT_TRUE(scalars.ok()) << scalars.status();
  ASSERT_EQ(scalars->size(), 1u);
  EXPECT_EQ((*scalars)[0].step, 3);
}

TEST_F(TensorBoardWriterTest, BadInputs) {
  auto writer = TensorBoardWriter::Open(ScratchPath("bad_inputs"));
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ((*writer)->AddScalar("", 1.0, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadTensorBoardScalars(ScratchPath("no_such_file")).status().code(),
            absl::StatusCode::kNotFound);
  // A log folder below a regular file cannot be created.
  WriteFile(ScratchPath("a_file"), "x");
  EXPECT_FALSE(TensorBoardWriter::Open(ScratchPath("a_file") + "/logs").ok());
  EXPECT_EQ(TensorBoardWriter::Open("").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
