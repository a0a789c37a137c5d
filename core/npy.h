// NumPy .npy files of little-endian float16 ('<f2') or float32 ('<f4'),
// C order: the format `oclip encode` and `oclip embed` write features in,
// readable by numpy.load. One header parser and one header writer for every
// .npy reader and writer of the project (whole-file here, row-streaming in
// embed/npy_rows.h, memory-mapped partitions in index/embedding_files.h).

#ifndef OCLIP_CORE_NPY_H_
#define OCLIP_CORE_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace oclip {

enum class NpyDtype { kFloat16, kFloat32 };

// "float16" / "float32"; INVALID_ARGUMENT otherwise.
absl::StatusOr<NpyDtype> ParseNpyDtype(absl::string_view name);
inline int NpyDtypeBytes(NpyDtype dtype) { return dtype == NpyDtype::kFloat16 ? 2 : 4; }

// What a .npy header says.
struct NpyHeader {
  NpyDtype dtype = NpyDtype::kFloat32;
  std::vector<int64_t> shape;
  size_t data_offset = 0;  // bytes from the start of the file to the data
  int64_t num_elements() const;
};

// Parses the header at the start of a .npy file (format 1.0, 2.0 or 3.0) of
// a C-order '<f2' or '<f4' array. `file_prefix` must hold the whole header:
// numpy's are under 64 KiB in format 1.0. DATA_LOSS saying what is wrong
// (the caller names the file).
absl::StatusOr<NpyHeader> ParseNpyHeader(absl::string_view file_prefix);

// The format 1.0 header (magic to the closing '\n') of a C-order array,
// padded with spaces as numpy pads it, to a multiple of 64 bytes; or, when
// `padded_size` is set, to exactly that many bytes (a header rewritten in
// place later must keep its size). INVALID_ARGUMENT if it does not fit.
absl::StatusOr<std::string> NpyHeaderBytes(NpyDtype dtype, absl::Span<const int64_t> shape,
                                           size_t padded_size = 0);

// Writes a C-order float32 array of `shape`; `values.size()` must equal the
// product of `shape`. Written via a temporary file and an atomic rename.
absl::Status WriteNpyFloat32(const std::string& path,
                             absl::Span<const int64_t> shape,
                             absl::Span<const float> values);

struct NpyFloat32 {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Reads what WriteNpyFloat32 writes ('<f4', C order). DATA_LOSS otherwise.
absl::StatusOr<NpyFloat32> ReadNpyFloat32(const std::string& path);

// Writes a C-order '<f2' array of `shape` (values rounded to the nearest
// half), via a temporary file and an atomic rename: clip-retrieval's fp16
// embedding files, for tools and tests.
absl::Status WriteNpyFloat16(const std::string& path, absl::Span<const int64_t> shape,
                             absl::Span<const float> values);

// IEEE 754 binary16 <-> binary32, round-to-nearest-even (numpy's astype,
// c10::Half), for float16 .npy files.
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t half);

}  // namespace oclip

#endif  // OCLIP_CORE_NPY_H_
