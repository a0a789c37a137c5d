#include "core/tensorboard_writer.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/crc32c.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

// Protobuf wire types.
constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kFixed32 = 5;

void PutFixed32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

void PutFixed64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
}

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7fu) | 0x80u));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutTag(std::string& out, int field, int wire_type) {
  PutVarint(out, (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type));
}

void PutBytesField(std::string& out, int field, absl::string_view bytes) {
  PutTag(out, field, kLengthDelimited);
  PutVarint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

void PutDoubleField(std::string& out, int field, double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  PutTag(out, field, kFixed64);
  PutFixed64(out, bits);
}

void PutFloatField(std::string& out, int field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  PutTag(out, field, kFixed32);
  PutFixed32(out, bits);
}

// int64 as protobuf encodes it: two's complement in a 64-bit varint.
void PutInt64Field(std::string& out, int field, int64_t value) {
  PutTag(out, field, kVarint);
  PutVarint(out, static_cast<uint64_t>(value));
}

double WallTimeSeconds() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

std::string EventHeader(double wall_time, int64_t step) {
  std::string event;
  PutDoubleField(event, 1, wall_time);
  PutInt64Field(event, 2, step);
  return event;
}

uint32_t LoadFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

uint64_t LoadFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// A protobuf message's fields, one at a time. Malformed input ends the
// iteration with ok() false.
class FieldReader {
 public:
  explicit FieldReader(absl::string_view data) : data_(data) {}

  // Reads the next field; false at the end or on malformed input.
  bool Next() {
    if (data_.empty() || !ok_) return false;
    uint64_t key;
    if (!ReadVarint(key)) return Fail();
    field_ = static_cast<int>(key >> 3);
    wire_type_ = static_cast<int>(key & 7u);
    if (field_ == 0) return Fail();
    switch (wire_type_) {
      case kVarint:
        return ReadVarint(varint_) || Fail();
      case kFixed64:
        if (data_.size() < 8) return Fail();
        fixed64_ = LoadFixed64(data_.data());
        data_.remove_prefix(8);
        return true;
      case kFixed32:
        if (data_.size() < 4) return Fail();
        fixed32_ = LoadFixed32(data_.data());
        data_.remove_prefix(4);
        return true;
      case kLengthDelimited: {
        uint64_t length;
        if (!ReadVarint(length) || length > data_.size()) return Fail();
        bytes_ = data_.substr(0, length);
        data_.remove_prefix(length);
        return true;
      }
      default:  // Groups (3, 4) are not used by these messages.
        return Fail();
    }
  }

  bool ok() const { return ok_; }
  int field() const { return field_; }
  int wire_type() const { return wire_type_; }
  uint64_t varint() const { return varint_; }
  uint64_t fixed64() const { return fixed64_; }
  uint32_t fixed32() const { return fixed32_; }
  absl::string_view bytes() const { return bytes_; }

 private:
  bool ReadVarint(uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (data_.empty()) return false;
      const uint8_t byte = static_cast<uint8_t>(data_.front());
      data_.remove_prefix(1);
      value |= static_cast<uint64_t>(byte & 0x7fu) << shift;
      if ((byte & 0x80u) == 0) return true;
    }
    return false;
  }
  bool Fail() {
    ok_ = false;
    return false;
  }

  absl::string_view data_;
  bool ok_ = true;
  int field_ = 0;
  int wire_type_ = 0;
  uint64_t varint_ = 0;
  uint64_t fixed64_ = 0;
  uint32_t fixed32_ = 0;
  absl::string_view bytes_;
};

struct TaggedValue {
  std::string tag;
  std::optional<float> simple_value;
};

bool ParseValue(absl::string_view data, TaggedValue& value) {
  FieldReader reader(data);
  while (reader.Next()) {
    if (reader.field() == 1 && reader.wire_type() == kLengthDelimited) {
      value.tag = std::string(reader.bytes());
    } else if (reader.field() == 2 && reader.wire_type() == kFixed32) {
      const uint32_t bits = reader.fixed32();
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      value.simple_value = f;
    }
  }
  return reader.ok();
}

bool ParseSummary(absl::string_view data, std::vector<TaggedValue>& values) {
  FieldReader reader(data);
  while (reader.Next()) {
    if (reader.field() == 1 && reader.wire_type() == kLengthDelimited) {
      TaggedValue value;
      if (!ParseValue(reader.bytes(), value)) return false;
      values.push_back(std::move(value));
    }
  }
  return reader.ok();
}

// Appends the Event's scalars to `out`; false if it is malformed.
bool ParseEvent(absl::string_view data, std::vector<ScalarEvent>& out) {
  double wall_time = 0;
  int64_t step = 0;
  std::vector<TaggedValue> values;
  FieldReader reader(data);
  while (reader.Next()) {
    if (reader.field() == 1 && reader.wire_type() == kFixed64) {
      const uint64_t bits = reader.fixed64();
      std::memcpy(&wall_time, &bits, sizeof(wall_time));
    } else if (reader.field() == 2 && reader.wire_type() == kVarint) {
      step = static_cast<int64_t>(reader.varint());
    } else if (reader.field() == 5 && reader.wire_type() == kLengthDelimited) {
      // Repeated occurrences of a message field merge: their values concatenate.
      if (!ParseSummary(reader.bytes(), values)) return false;
    }
  }
  if (!reader.ok()) return false;
  for (TaggedValue& value : values) {
    if (!value.simple_value.has_value()) continue;  // Images, histograms, ...
    out.push_back({std::move(value.tag), *value.simple_value, step, wall_time});
  }
  return true;
}

std::string HostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace

std::string FrameTfRecord(absl::string_view data) {
  std::string record;
  record.reserve(data.size() + 16);
  PutFixed64(record, data.size());
  PutFixed32(record, MaskCrc32c(Crc32c(record.data(), 8)));
  record.append(data.data(), data.size());
  PutFixed32(record, MaskCrc32c(Crc32c(data)));
  return record;
}

absl::StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(
    const std::string& log_dir) {
  if (log_dir.empty()) return absl::InvalidArgumentError("TensorBoard log folder is empty");
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  if (ec) return ErrnoToStatus(ec.value(), absl::StrCat("creating ", log_dir));
  static std::atomic<int> writers{0};
  const double now = WallTimeSeconds();
  const std::string path =
      absl::StrCat(log_dir, "/events.out.tfevents.", static_cast<int64_t>(now), ".", HostName(),
                   ".", ::getpid(), ".", writers.fetch_add(1));
  // "x": never append to or replace another writer's file.
  std::FILE* file = std::fopen(path.c_str(), "wbx");
  if (file == nullptr) return ErrnoToStatus(errno, absl::StrCat("creating ", path));
  std::unique_ptr<TensorBoardWriter> writer(new TensorBoardWriter(path, file));
  std::string event = EventHeader(now, 0);
  PutBytesField(event, 3, "brain.Event:2");
  {
    absl::MutexLock lock(&writer->mu_);
    OCLIP_RETURN_IF_ERROR(writer->WriteRecord(event));
  }
  OCLIP_RETURN_IF_ERROR(writer->Flush());
  return writer;
}

TensorBoardWriter::~TensorBoardWriter() {
  absl::MutexLock lock(&mu_);
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status TensorBoardWriter::AddScalar(const std::string& tag, double value, int64_t step) {
  if (tag.empty()) return absl::InvalidArgumentError("TensorBoard scalar tag is empty");
  std::string summary_value;
  PutBytesField(summary_value, 1, tag);
  PutFloatField(summary_value, 2, static_cast<float>(value));
  std::string summary;
  PutBytesField(summary, 1, summary_value);
  std::string event = EventHeader(WallTimeSeconds(), step);
  PutBytesField(event, 5, summary);
  absl::MutexLock lock(&mu_);
  return WriteRecord(event);
}

absl::Status TensorBoardWriter::Flush() {
  absl::MutexLock lock(&mu_);
  if (std::fflush(file_) != 0) return ErrnoToStatus(errno, absl::StrCat("writing ", path_));
  return absl::OkStatus();
}

absl::Status TensorBoardWriter::WriteRecord(absl::string_view data) {
  const std::string record = FrameTfRecord(data);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) {
    return ErrnoToStatus(errno, absl::StrCat("writing ", path_));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ScalarEvent>> ReadTensorBoardScalars(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  absl::string_view rest = file->view();
  std::vector<ScalarEvent> scalars;
  for (int64_t record = 0; !rest.empty(); ++record) {
    const size_t offset = file->size() - rest.size();
    const auto loss = [&](absl::string_view what) {
      return absl::DataLossError(
          absl::StrCat(path, ": record ", record, " at byte ", offset, ": ", what));
    };
    if (rest.size() < 12) return loss("truncated length header");
    const uint64_t length = LoadFixed64(rest.data());
    if (MaskCrc32c(Crc32c(rest.data(), 8)) != LoadFixed32(rest.data() + 8)) {
      return loss("length CRC-32C mismatch");
    }
    rest.remove_prefix(12);
    if (length > rest.size() || rest.size() - length < 4) return loss("truncated data");
    const absl::string_view data = rest.substr(0, length);
    if (MaskCrc32c(Crc32c(data)) != LoadFixed32(rest.data() + length)) {
      return loss("data CRC-32C mismatch");
    }
    rest.remove_prefix(length + 4);
    if (!ParseEvent(data, scalars)) return loss("malformed Event protobuf");
  }
  return scalars;
}

}  // namespace oclip
