#include "embed/npy_rows.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

absl::Status IoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<NpyDtype> ParseNpyDtype(absl::string_view name) {
  if (name == "float16") return NpyDtype::kFloat16;
  if (name == "float32") return NpyDtype::kFloat32;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown output dtype \"", name, "\" (float16, float32)"));
}


absl::StatusOr<std::unique_ptr<NpyRowWriter>> NpyRowWriter::Create(const std::string& path,
                                                                   NpyDtype dtype, int64_t dim) {
  if (dim < 1) return absl::InvalidArgumentError(absl::StrCat("npy row width ", dim, " < 1"));
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return IoError("create", path);
  std::unique_ptr<NpyRowWriter> writer(new NpyRowWriter(path, dtype, dim, file));
  OCLIP_RETURN_IF_ERROR(writer->WriteHeader());
  return writer;
}

NpyRowWriter::~NpyRowWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status NpyRowWriter::WriteHeader() {
  std::string header =
      absl::StrCat("{'descr': '", dtype_ == NpyDtype::kFloat16 ? "<f2" : "<f4",
                   "', 'fortran_order': False, 'shape': (", rows_, ", ", dim_, "), }");
  const size_t prefix = kMagicLen + 2 + 2;
  if (prefix + header.size() + 1 > static_cast<size_t>(kNpyRowsHeaderBytes)) {
    return absl::InvalidArgumentError(absl::StrCat("npy header too long for ", path_));
  }
  header.append(kNpyRowsHeaderBytes - prefix - header.size() - 1, ' ');
  header.push_back('\n');
  const uint16_t header_len = static_cast<uint16_t>(header.size());  // Little-endian host.
  const uint8_t version[2] = {1, 0};
  if (std::fseek(file_, 0, SEEK_SET) != 0 ||
      std::fwrite(kMagic, 1, kMagicLen, file_) != kMagicLen ||
      std::fwrite(version, 1, 2, file_) != 2 || std::fwrite(&header_len, 2, 1, file_) != 1 ||
      std::fwrite(header.data(), 1, header.size(), file_) != header.size()) {
    return IoError("write", path_);
  }
  return absl::OkStatus();
}

absl::Status NpyRowWriter::Append(const void* data, int64_t rows) {
  if (file_ == nullptr) return absl::InvalidArgumentError("NpyRowWriter::Append after Finish");
  if (rows <= 0) return absl::OkStatus();
  const size_t bytes = static_cast<size_t>(rows * dim_ * NpyDtypeBytes(dtype_));
  if (std::fwrite(data, 1, bytes, file_) != bytes) return IoError("write", path_);
  rows_ += rows;
  return absl::OkStatus();
}

absl::Status NpyRowWriter::Finish() {
  if (file_ == nullptr) return absl::InvalidArgumentError("NpyRowWriter::Finish called twice");
  absl::Status status = WriteHeader();
  // Durable before the caller's rename makes the partition count as done.
  if (status.ok() && (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0)) {
    status = IoError("flush", path_);
  }
  if (std::fclose(file_) != 0 && status.ok()) status = IoError("close", path_);
  file_ = nullptr;
  return status;
}

absl::StatusOr<NpyRows> ReadNpyRows(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  auto corrupt = [&path](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ": not a 2-D float16/float32 .npy file: ", why));
  };
  const uint8_t* data = reinterpret_cast<const uint8_t*>(file->data());
  if (file->size() < kMagicLen + 4 || std::memcmp(data, kMagic, kMagicLen) != 0) {
    return corrupt("bad magic");
  }
  if (data[6] != 1) return corrupt("only format version 1.0 is read");
  uint16_t header_len = 0;
  std::memcpy(&header_len, data + 8, 2);
  if (10u + header_len > file->size()) return corrupt("truncated header");
  absl::string_view header(reinterpret_cast<const char*>(data + 10), header_len);
  NpyRows out;
  if (absl::StrContains(header, "'descr': '<f2'")) {
    out.dtype = NpyDtype::kFloat16;
  } else if (absl::StrContains(header, "'descr': '<f4'")) {
    out.dtype = NpyDtype::kFloat32;
  } else {
    return corrupt("dtype is neither <f2 nor <f4");
  }
  if (!absl::StrContains(header, "'fortran_order': False")) return corrupt("Fortran order");
  const size_t open = header.find("'shape': (");
  const size_t close = open == absl::string_view::npos ? open : header.find(')', open);
  if (close == absl::string_view::npos) return corrupt("no shape");
  std::vector<absl::string_view> dims =
      absl::StrSplit(header.substr(open + 10, close - open - 10), ',', absl::SkipWhitespace());
  if (dims.size() != 2 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(dims[0]), &out.rows) ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(dims[1]), &out.dim) || out.rows < 0 ||
      out.dim < 0) {
    return corrupt("shape is not (rows, dim)");
  }
  const size_t width = NpyDtypeBytes(out.dtype);
  const size_t count = static_cast<size_t>(out.rows * out.dim);
  if (file->size() != 10u + header_len + count * width) return corrupt("size does not match shape");
  const uint8_t* body = data + 10 + header_len;
  out.values.resize(count);
  if (out.dtype == NpyDtype::kFloat32) {
    std::memcpy(out.values.data(), body, count * 4);
  } else {
    for (size_t i = 0; i < count; ++i) {
      uint16_t half;
      std::memcpy(&half, body + 2 * i, 2);
      out.values[i] = HalfToFloat(half);
    }
  }
  return out;
}

}  // namespace oclip
