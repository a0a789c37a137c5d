#include "core/npy.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "absl/strings/match.h"
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

// Writes `header` then `data` to `path` via a temporary file and a rename.
absl::Status WriteNpyAtomically(const std::string& path, const std::string& header,
                                const void* data, size_t bytes) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return ErrnoToStatus(errno, absl::StrCat("cannot create ", tmp));
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            (bytes == 0 || std::fwrite(data, 1, bytes, f) == bytes);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(tmp.c_str());
    return ErrnoToStatus(error, absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> CheckedElements(absl::Span<const int64_t> shape, size_t values) {
  int64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError("npy shape has a negative dimension");
    elements *= d;
  }
  if (elements != static_cast<int64_t>(values)) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy shape (", absl::StrJoin(shape, ", "), ") holds ", elements,
                     " values, got ", values));
  }
  return elements;
}

}  // namespace

absl::StatusOr<NpyDtype> ParseNpyDtype(absl::string_view name) {
  if (name == "float16") return NpyDtype::kFloat16;
  if (name == "float32") return NpyDtype::kFloat32;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "'; expected float16 or float32"));
}

int64_t NpyHeader::num_elements() const {
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  return elements;
}

absl::StatusOr<NpyHeader> ParseNpyHeader(absl::string_view prefix) {
  auto corrupt = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("not a float16/float32 .npy file: ", why));
  };
  if (prefix.size() < kMagicLen + 4 || prefix.substr(0, kMagicLen) != kMagic) {
    return corrupt("bad magic");
  }
  const int major = static_cast<uint8_t>(prefix[6]);
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(prefix[8]) | (static_cast<uint8_t>(prefix[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (prefix.size() < 12) return corrupt("truncated header");
    for (int i = 3; i >= 0; --i) {
      header_len = (header_len << 8) | static_cast<uint8_t>(prefix[8 + i]);
    }
    header_start = 12;
  } else {
    return corrupt(absl::StrCat("unknown format version ", major));
  }
  if (header_start + header_len > prefix.size()) return corrupt("truncated header");
  const absl::string_view header = prefix.substr(header_start, header_len);

  NpyHeader out;
  if (absl::StrContains(header, "'descr': '<f4'")) {
    out.dtype = NpyDtype::kFloat32;
  } else if (absl::StrContains(header, "'descr': '<f2'")) {
    out.dtype = NpyDtype::kFloat16;
  } else {
    return corrupt("dtype is neither '<f4' nor '<f2'");
  }
  if (!absl::StrContains(header, "'fortran_order': False")) return corrupt("Fortran order");
  const size_t open = header.find("'shape': (");
  const size_t close = open == absl::string_view::npos ? open : header.find(')', open);
  if (close == absl::string_view::npos) return corrupt("no shape");
  for (absl::string_view part :
       absl::StrSplit(header.substr(open + 10, close - open - 10), ',', absl::SkipWhitespace())) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) {
      return corrupt("bad shape");
    }
    out.shape.push_back(d);
  }
  out.data_offset = header_start + header_len;
  return out;
}

absl::StatusOr<std::string> NpyHeaderBytes(NpyDtype dtype, absl::Span<const int64_t> shape,
                                           size_t padded_size) {
  // numpy's spelling: (3,) and (2, 3).
  std::string dims = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) dims.push_back(',');
  std::string dict = absl::StrCat("{'descr': '", dtype == NpyDtype::kFloat16 ? "<f2" : "<f4",
                                  "', 'fortran_order': False, 'shape': (", dims, "), }");
  // Magic + version + 2-byte length + dict + '\n'.
  const size_t prefix = kMagicLen + 2 + 2;
  const size_t unpadded = prefix + dict.size() + 1;
  const size_t size = padded_size != 0 ? padded_size : (unpadded + 63) / 64 * 64;
  if (unpadded > size || size - prefix > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("npy header of ", unpadded, " bytes does not fit in ", size));
  }
  dict.append(size - unpadded, ' ');
  dict.push_back('\n');
  std::string bytes(kMagic, kMagicLen);
  bytes.push_back('\x01');
  bytes.push_back('\x00');
  bytes.push_back(static_cast<char>(dict.size() & 0xff));
  bytes.push_back(static_cast<char>(dict.size() >> 8));
  return bytes + dict;
}

absl::Status WriteNpyFloat32(const std::string& path,
                             absl::Span<const int64_t> shape,
                             absl::Span<const float> values) {
  OCLIP_RETURN_IF_ERROR(CheckedElements(shape, values.size()).status());
  OCLIP_ASSIGN_OR_RETURN(std::string header, NpyHeaderBytes(NpyDtype::kFloat32, shape));
  return WriteNpyAtomically(path, header, values.data(), values.size() * sizeof(float));
}

absl::Status WriteNpyFloat16(const std::string& path, absl::Span<const int64_t> shape,
                             absl::Span<const float> values) {
  OCLIP_RETURN_IF_ERROR(CheckedElements(shape, values.size()).status());
  OCLIP_ASSIGN_OR_RETURN(std::string header, NpyHeaderBytes(NpyDtype::kFloat16, shape));
  std::vector<uint16_t> halves(values.size());
  for (size_t i = 0; i < values.size(); ++i) halves[i] = FloatToHalf(values[i]);
  return WriteNpyAtomically(path, header, halves.data(), halves.size() * sizeof(uint16_t));
}

absl::StatusOr<NpyFloat32> ReadNpyFloat32(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  auto corrupt = [&path](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(path, ": ", why));
  };
  absl::StatusOr<NpyHeader> header = ParseNpyHeader(file->view());
  if (!header.ok()) return corrupt(header.status().message());
  if (header->dtype != NpyDtype::kFloat32) return corrupt("dtype is not <f4");
  const int64_t elements = header->num_elements();
  if (file->size() - header->data_offset != static_cast<size_t>(elements) * sizeof(float)) {
    return corrupt("data size does not match the shape");
  }
  NpyFloat32 out;
  out.shape = header->shape;
  out.values.resize(elements);
  if (elements > 0) {
    std::memcpy(out.values.data(), file->data() + header->data_offset, elements * sizeof(float));
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
