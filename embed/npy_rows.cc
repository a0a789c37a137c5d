#include "embed/npy_rows.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

absl::Status IoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat("cannot ", what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace


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
  absl::StatusOr<std::string> header = NpyHeaderBytes(dtype_, {rows_, dim_}, kNpyRowsHeaderBytes);
  if (!header.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", header.status().message()));
  }
  if (std::fseek(file_, 0, SEEK_SET) != 0 ||
      std::fwrite(header->data(), 1, header->size(), file_) != header->size()) {
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
  auto corrupt = [&path](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(path, ": not a 2-D float16/float32 .npy file: ", why));
  };
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(file->view());
  if (!header.ok()) return corrupt(header.status().message());
  if (header->shape.size() != 2) return corrupt("shape is not (rows, dim)");
  NpyRows out;
  out.dtype = header->dtype;
  out.rows = header->shape[0];
  out.dim = header->shape[1];
  const size_t width = NpyDtypeBytes(out.dtype);
  const size_t count = static_cast<size_t>(out.rows * out.dim);
  if (file->size() != header->data_offset + count * width) {
    return corrupt("size does not match shape");
  }
  const uint8_t* body = reinterpret_cast<const uint8_t*>(file->data()) + header->data_offset;
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
