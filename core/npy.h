// NumPy .npy files (format version 1.0), little-endian float32 only: the
// format `oclip encode` writes features in, readable by numpy.load.

#ifndef OCLIP_CORE_NPY_H_
#define OCLIP_CORE_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace oclip {

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

// IEEE 754 binary16 <-> binary32, round-to-nearest-even (numpy's astype,
// c10::Half), for float16 .npy files.
uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t half);

}  // namespace oclip

#endif  // OCLIP_CORE_NPY_H_
