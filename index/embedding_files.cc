#include "index/embedding_files.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/mapped_file.h"
#include "core/npy.h"
#include "core/status.h"

namespace oclip {
namespace index {
namespace {

// Reads the first bytes of a .npy file; the header is at most a few KiB, so
// the data itself is never touched here.
absl::StatusOr<std::string> ReadPrefix(const std::string& path, size_t max_bytes,
                                       uint64_t* file_size) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  *file_size = std::filesystem::file_size(path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  std::string buf(max_bytes, '\0');
  buf.resize(std::fread(buf.data(), 1, max_bytes, f));
  std::fclose(f);
  return buf;
}

}  // namespace

absl::StatusOr<NpyMatrixHeader> ReadNpyMatrixHeader(const std::string& path) {
  uint64_t file_size = 0;
  OCLIP_ASSIGN_OR_RETURN(std::string prefix, ReadPrefix(path, 1 << 16, &file_size));
  auto corrupt = [&path](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(path, ": ", why));
  };
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(prefix);
  if (!header.ok()) return corrupt(header.status().message());
  if (header->shape.size() != 2) {
    return corrupt(absl::StrCat("shape has ", header->shape.size(),
                                " dimensions, expected [n, d]"));
  }
  NpyMatrixHeader out;
  out.dtype = header->dtype;
  out.rows = header->shape[0];
  out.cols = header->shape[1];
  out.data_offset = header->data_offset;
  const uint64_t expected =
      out.data_offset + static_cast<uint64_t>(out.rows) * out.cols * NpyDtypeBytes(out.dtype);
  if (file_size != expected) {
    return corrupt(absl::StrCat("file has ", file_size, " bytes, shape [", out.rows, ", ",
                                out.cols, "] needs ", expected));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<EmbeddingFiles>> EmbeddingFiles::Open(
    const std::string& folder, const std::string& prefix) {
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) {
    return absl::NotFoundError(absl::StrCat(folder, ": no such embedding folder"));
  }
  // Ordered by the integer suffix: img_emb_10 follows img_emb_9.
  std::map<int64_t, std::string> numbered;
  const std::string stem = prefix + "_";
  for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    absl::string_view rest = name;
    if (!absl::ConsumePrefix(&rest, stem) || !absl::ConsumeSuffix(&rest, ".npy")) continue;
    int64_t i = 0;
    if (!absl::SimpleAtoi(rest, &i) || i < 0) continue;
    numbered[i] = entry.path().string();
  }
  if (ec) return absl::InternalError(absl::StrCat(folder, ": ", ec.message()));
  if (numbered.empty()) {
    return absl::NotFoundError(absl::StrCat(folder, ": no ", stem, "{i}.npy files"));
  }
  std::vector<std::string> paths;
  for (auto& [i, path] : numbered) paths.push_back(std::move(path));
  return OpenFiles(std::move(paths));
}

absl::StatusOr<std::unique_ptr<EmbeddingFiles>> EmbeddingFiles::OpenFiles(
    std::vector<std::string> paths) {
  if (paths.empty()) return absl::InvalidArgumentError("no embedding files given");
  std::vector<File> files;
  int64_t rows = 0;
  int64_t dim = -1;
  for (std::string& path : paths) {
    OCLIP_ASSIGN_OR_RETURN(NpyMatrixHeader header, ReadNpyMatrixHeader(path));
    if (dim < 0) {
      dim = header.cols;
    } else if (header.cols != dim) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " has dimension ", header.cols, " but ", files.front().path,
                       " has ", dim, ": all embedding files must share d"));
    }
    files.push_back(File{std::move(path), header, rows});
    rows += header.rows;
  }
  if (rows == 0 || dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedding files hold no vectors (", rows, " rows of dimension ", dim, ")"));
  }
  return std::unique_ptr<EmbeddingFiles>(
      new EmbeddingFiles(std::move(files), rows, static_cast<int>(dim)));
}

absl::Status EmbeddingFiles::ReadRows(int64_t start, int64_t count, float* out) const {
  if (start < 0 || count < 0 || start + count > rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows [", start, ", ", start + count, ") outside [0, ", rows_, ")"));
  }
  // First file whose range ends after `start`.
  auto it = std::upper_bound(files_.begin(), files_.end(), start,
                             [](int64_t row, const File& f) { return row < f.first_row; });
  --it;
  while (count > 0) {
    const File& file = *it++;
    const int64_t local = start - file.first_row;
    const int64_t n = std::min(count, file.header.rows - local);
    if (n <= 0) continue;
    OCLIP_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(file.path));
    const size_t elems = static_cast<size_t>(n) * dim_;
    if (file.header.dtype == NpyDtype::kFloat32) {
      const uint8_t* src = mapped->data() + file.header.data_offset + local * dim_ * 4;
      if (mapped->size() < file.header.data_offset + (local + n) * dim_ * 4) {
        return absl::DataLossError(absl::StrCat(file.path, ": truncated since it was opened"));
      }
      std::memcpy(out, src, elems * 4);
    } else {
      const uint8_t* src = mapped->data() + file.header.data_offset + local * dim_ * 2;
      if (mapped->size() < file.header.data_offset + (local + n) * dim_ * 2) {
        return absl::DataLossError(absl::StrCat(file.path, ": truncated since it was opened"));
      }
      for (size_t i = 0; i < elems; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
    }
    out += elems;
    start += n;
    count -= n;
  }
  return absl::OkStatus();
}

absl::Status EmbeddingFiles::ReadRowsById(absl::Span<const int64_t> ids, float* out) const {
  // Visit ids in ascending order so that each file is mapped once.
  std::vector<size_t> order(ids.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&ids](size_t a, size_t b) { return ids[a] < ids[b]; });
  for (int64_t id : ids) {
    if (id < 0 || id >= rows_) {
      return absl::InvalidArgumentError(absl::StrCat("row ", id, " outside [0, ", rows_, ")"));
    }
  }
  size_t pos = 0;
  for (const File& file : files_) {
    const int64_t end = file.first_row + file.header.rows;
    if (pos >= order.size()) break;
    if (ids[order[pos]] >= end) continue;
    OCLIP_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(file.path));
    const size_t elem = NpyDtypeBytes(file.header.dtype);
    if (mapped->size() < file.header.data_offset + file.header.rows * dim_ * elem) {
      return absl::DataLossError(absl::StrCat(file.path, ": truncated since it was opened"));
    }
    for (; pos < order.size() && ids[order[pos]] < end; ++pos) {
      const int64_t local = ids[order[pos]] - file.first_row;
      const uint8_t* src = mapped->data() + file.header.data_offset + local * dim_ * elem;
      float* dst = out + order[pos] * dim_;
      if (elem == 4) {
        std::memcpy(dst, src, dim_ * 4);
      } else {
        for (int j = 0; j < dim_; ++j) {
          uint16_t h;
          std::memcpy(&h, src + 2 * j, 2);
          dst[j] = HalfToFloat(h);
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace index
}  // namespace oclip
