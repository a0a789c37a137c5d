// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as iSCSI (RFC 3720),
// LevelDB and TensorFlow's record files use it, and TFRecord's "masked" form.
//
// A software table implementation: the event and record files that use it
// are small, so a hardware (SSE 4.2) path is not worth a CPU dispatch here.
// Pure functions, thread-safe.

#ifndef OCLIP_CORE_CRC32C_H_
#define OCLIP_CORE_CRC32C_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace oclip {

// The CRC-32C of `data` continued from `crc`, the CRC-32C of the bytes before
// it (0 for none): Crc32cExtend(Crc32c(a), b) == Crc32c(a + b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t Crc32c(const void* data, size_t size) { return Crc32cExtend(0, data, size); }
inline uint32_t Crc32c(absl::string_view data) { return Crc32cExtend(0, data.data(), data.size()); }

// TFRecord's masked CRC: a CRC of data that holds CRCs is itself weak, so
// record files store this rotated, offset form instead.
inline uint32_t MaskCrc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }
inline uint32_t UnmaskCrc32c(uint32_t masked) {
  const uint32_t rotated = masked - 0xa282ead8u;
  return (rotated >> 17) | (rotated << 15);
}

}  // namespace oclip

#endif  // OCLIP_CORE_CRC32C_H_
