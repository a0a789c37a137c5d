// JPEG decoding straight to memory with libjpeg(-turbo), the decoder PIL uses,
// with PIL's settings (islow DCT, fancy upsampling): the same pixels as
// Image.open(...).convert() of a JPEG, without libvips's per-image pipeline
// set-up, which costs about as much as the decode itself for small images.
//
// Handles 8-bit grey, YCbCr/RGB and CMYK/YCCK JPEGs (CMYK comes back as 4
// bands, inverted as PIL reads Adobe CMYK: "CMYK;I"); INVALID_ARGUMENT for
// corrupt data. libjpeg
// errors are caught (longjmp) and never abort the process. Thread-safe.

#ifndef OCLIP_MODEL_IMAGE_JPEG_DECODER_H_
#define OCLIP_MODEL_IMAGE_JPEG_DECODER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/image/pil_resample.h"

namespace oclip {

bool LooksLikeJpeg(absl::string_view bytes);

struct JpegDecodeOptions {
  int64_t max_pixels = 178956970;  // Checked from the header, before decoding.
  // 1, 2, 4 or 8: decode at 1/scale_denom in the DCT domain.
  int scale_denom = 1;
  // Fast integer DCT and plain (not "fancy") chroma upsampling: faster, and
  // no longer PIL's pixels.
  bool fast_dct = false;
};

struct DecodedJpeg {
  Image8 image;
  bool cmyk = false;  // 4 bands of C, M, Y, K
};

absl::StatusOr<DecodedJpeg> DecodeJpeg(absl::string_view bytes, const JpegDecodeOptions& options);

// Width and height from the header only.
absl::StatusOr<std::pair<int, int>> JpegDimensions(absl::string_view bytes);

}  // namespace oclip

#endif  // OCLIP_MODEL_IMAGE_JPEG_DECODER_H_
