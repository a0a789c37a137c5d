// Row-streaming .npy files for embedding jobs: a [rows, dim] matrix of
// little-endian float16 ('<f2') or float32 ('<f4') written a block of rows at
// a time, so a partition of millions of embeddings never sits in memory, and
// the reader for what it writes (numpy.load reads both).
//
// The row count is only known at the end, so the header is written with a
// fixed length (kNpyRowsHeaderBytes, a multiple of 64 as numpy pads it) and
// rewritten in place by Finish(). Files are byte-identical for the same rows.
//
// NpyRowWriter writes to exactly the path it is given; making the file appear
// atomically (temporary name + rename) is the caller's business, because an
// embedding partition renames several files together.
//
// Errors: INTERNAL for I/O failures (naming the file and errno), INVALID_ARGUMENT
// for misuse (wrong byte count, Append after Finish), DATA_LOSS from the reader
// for anything that is not a C-order 2-D '<f2'/'<f4' .npy file.
// Thread safety: a writer is used by one thread at a time; the reader is a
// pure function.

#ifndef OCLIP_EMBED_NPY_ROWS_H_
#define OCLIP_EMBED_NPY_ROWS_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/npy.h"

namespace oclip {

// Magic + version + header length + header, padded with spaces to this size.
inline constexpr int kNpyRowsHeaderBytes = 128;

class NpyRowWriter {
 public:
  // Creates (truncating) `path` and writes a provisional header.
  static absl::StatusOr<std::unique_ptr<NpyRowWriter>> Create(const std::string& path,
                                                              NpyDtype dtype, int64_t dim);
  ~NpyRowWriter();  // Closes the file if Finish() was not called (leaving it incomplete).
  NpyRowWriter(const NpyRowWriter&) = delete;
  NpyRowWriter& operator=(const NpyRowWriter&) = delete;

  // Appends `rows` rows; `data` holds rows * dim values of the writer's dtype
  // (raw little-endian bytes: IEEE half for kFloat16).
  absl::Status Append(const void* data, int64_t rows);
  // Rewrites the header with the final row count, flushes to disk (fsync) and
  // closes the file.
  absl::Status Finish();

  int64_t rows() const { return rows_; }

 private:
  NpyRowWriter(std::string path, NpyDtype dtype, int64_t dim, std::FILE* file)
      : path_(std::move(path)), dtype_(dtype), dim_(dim), file_(file) {}
  absl::Status WriteHeader();

  const std::string path_;
  const NpyDtype dtype_;
  const int64_t dim_;
  std::FILE* file_;
  int64_t rows_ = 0;
};

// A .npy matrix read back as float32 values (float16 widened exactly).
struct NpyRows {
  NpyDtype dtype = NpyDtype::kFloat32;
  int64_t rows = 0;
  int64_t dim = 0;
  std::vector<float> values;  // rows * dim, row-major.
};

// Reads a C-order 2-D '<f2' or '<f4' .npy file (any header length, as numpy
// writes it too). NOT_FOUND for a missing file, DATA_LOSS for anything else.
absl::StatusOr<NpyRows> ReadNpyRows(const std::string& path);

}  // namespace oclip

#endif  // OCLIP_EMBED_NPY_ROWS_H_
