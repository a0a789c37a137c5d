#include "core/npy.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

}  // namespace

absl::Status WriteNpyFloat32(const std::string& path,
                             absl::Span<const int64_t> shape,
                             absl::Span<const float> values) {
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  if (elements != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy shape holds ", elements, " values, got ", values.size()));
  }
  // numpy's spelling: (3,) and (2, 3).
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims.push_back(',');
  std::string header = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (",
                                    dims, "), }");
  // Magic + version + 2-byte length + header + '\n' is a multiple of 64.
  const size_t prefix = kMagicLen + 2 + 2;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  const uint16_t header_len = static_cast<uint16_t>(header.size());

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  const uint8_t version[2] = {1, 0};
  bool ok = std::fwrite(kMagic, 1, kMagicLen, f) == kMagicLen &&
            std::fwrite(version, 1, 2, f) == 2 &&
            std::fwrite(&header_len, 2, 1, f) == 1 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            (values.empty() ||
             std::fwrite(values.data(), sizeof(float), values.size(), f) == values.size());
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<NpyFloat32> ReadNpyFloat32(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  auto corrupt = [&path](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ": not a float32 .npy file: ", why));
  };
  if (file->size() < kMagicLen + 4 ||
      std::memcmp(file->data(), kMagic, kMagicLen) != 0) {
    return corrupt("bad magic");
  }
  if (file->data()[6] != 1) return corrupt("only format version 1.0 is read");
  uint16_t header_len = 0;
  std::memcpy(&header_len, file->data() + 8, 2);
  if (10u + header_len > file->size()) return corrupt("truncated header");
  std::string_view header(reinterpret_cast<const char*>(file->data() + 10), header_len);
  if (header.find("'descr': '<f4'") == std::string_view::npos) return corrupt("dtype is not <f4");
  if (header.find("'fortran_order': False") == std::string_view::npos) {
    return corrupt("Fortran order");
  }
  size_t open = header.find("'shape': (");
  size_t close = header.find(')', open);
  if (open == std::string_view::npos || close == std::string_view::npos) {
    return corrupt("no shape");
  }
  absl::string_view dims(header.data() + open + 10, close - open - 10);
  NpyFloat32 out;
  int64_t elements = 1;
  for (absl::string_view part : absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) {
      return corrupt("bad shape");
    }
    out.shape.push_back(d);
    elements *= d;
  }
  const size_t data_offset = 10u + header_len;
  if (file->size() - data_offset != static_cast<size_t>(elements) * sizeof(float)) {
    return corrupt("data size does not match the shape");
  }
  out.values.resize(elements);
  if (elements > 0) {
    std::memcpy(out.values.data(), file->data() + data_offset, elements * sizeof(float));
  }
  return out;
}

namespace {

uint32_t FloatBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

float BitsFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace

// Maratyszcza's FP16 conversions (the ones c10::Half uses): exact, with
// round-to-nearest-even done by the FPU's own float addition, so no branchy
// bit rounding to get wrong. They rely on strict IEEE float semantics.
uint16_t FloatToHalf(float value) {
  const float scale_to_inf = 0x1.0p+112f;
  const float scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(value) * scale_to_inf) * scale_to_zero;
  const uint32_t w = FloatBits(value);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & UINT32_C(0x80000000);
  uint32_t bias = shl1_w & UINT32_C(0xFF000000);
  if (bias < UINT32_C(0x71000000)) bias = UINT32_C(0x71000000);
  base = BitsFloat((bias >> 1) + UINT32_C(0x07800000)) + base;
  const uint32_t bits = FloatBits(base);
  const uint32_t exp_bits = (bits >> 13) & UINT32_C(0x00007C00);
  const uint32_t mantissa_bits = bits & UINT32_C(0x00000FFF);
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) |
                               (shl1_w > UINT32_C(0xFF000000) ? UINT32_C(0x7E00) : nonsign));
}

float HalfToFloat(uint16_t half) {
  const uint32_t w = static_cast<uint32_t>(half) << 16;
  const uint32_t sign = w & UINT32_C(0x80000000);
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = UINT32_C(0xE0) << 23;
  const float exp_scale = 0x1.0p-112f;
  const float normalized = BitsFloat((two_w >> 4) + exp_offset) * exp_scale;
  const uint32_t magic_mask = UINT32_C(126) << 23;
  const float denormalized = BitsFloat((two_w >> 17) | magic_mask) - 0.5f;
  const uint32_t denormalized_cutoff = UINT32_C(1) << 27;
  return BitsFloat(sign |
                   (two_w < denormalized_cutoff ? FloatBits(denormalized) : FloatBits(normalized)));
}

}  // namespace oclip
