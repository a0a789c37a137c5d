// OpenCLIP's eval transform for one image, with the pixels PIL produces:
// decode (JPEG straight with libjpeg-turbo, PIL's decoder; everything else with
// libvips), resize the shorter side to `image_size` (PIL's bicubic, bit-exact;
// premultiplied for alpha, nearest neighbour for palette images, in CMYK for
// CMYK JPEGs; the long side truncated as torchvision computes it), center crop
// with Python's round-half-to-even offsets, convert to RGB (alpha dropped
// without compositing, grey replicated, PIL's CMYK formula), scale to [0, 1]
// and normalize with the checkpoint's mean/std. EXIF orientation is not
// applied (OpenCLIP does not apply it).
//
// The output is written into a caller-provided float buffer of
// 3 * image_size * image_size values (CHW), e.g. a slot of a batch tensor.
// JPEGs (not CMYK) are streamed: decoded rows are resampled a block at a time
// as libjpeg-turbo produces them and each output row is normalized straight
// into `out`, with buffers reused per thread, so that no full-size copy of
// the image is made.
//
// Errors: INVALID_ARGUMENT for bytes that are not a decodable image, or an
// image larger than `max_pixels` (decompression bombs); NOT_FOUND for a
// missing file. Thread-safe: libvips is initialised once per process.

#ifndef OCLIP_MODEL_IMAGE_PREPROCESS_H_
#define OCLIP_MODEL_IMAGE_PREPROCESS_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/image/pil_resample.h"

namespace oclip {

struct PreprocessOptions {
  int image_size = 224;
  // OpenAI's normalization, used by all released checkpoints but one.
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};
  int64_t max_pixels = 178956970;  // PIL's decompression-bomb limit.
  // Fast mode, not PIL-exact: JPEGs are decoded at the smallest scale M/8
  // (M = 1..8, libjpeg-turbo's scaled IDCTs: shrink-on-load) whose shorter
  // side still covers `image_size`, with the fast integer DCT and plain
  // chroma upsampling, then resampled as usual.
  bool fast_jpeg_shrink = false;
};

absl::Status PreprocessImageBytes(absl::string_view bytes, const PreprocessOptions& options,
                                  float* out);
absl::Status PreprocessImageFile(const std::string& path, const PreprocessOptions& options,
                                 float* out);

// Python's round() for x.5 ties: to the nearest even integer.
int64_t RoundHalfToEven(double x);

// torchvision's Resize(size) output for a (width, height) input: the shorter
// side becomes `size`, the longer int(size * long / short).
std::pair<int, int> ShortSideResize(int width, int height, int size);

// The two halves of PreprocessImageBytes, shared with the train transform
// (model/image/train_transform.h), which crops before it resizes.

// How PIL holds the decoded pixels, which decides how it resizes them.
enum class PilMode {
  kDirect,   // L, LA, RGB, RGBA: bicubic; alpha premultiplied while resizing
  kPalette,  // P (palette PNG, GIF) and 1 (bilevel PNG): nearest neighbour
  kCmyk,     // CMYK JPEG: bicubic on the four bands, then PIL's CMYK -> RGB
  kInt32,    // I (16-bit grey PNG): bicubic in 32 bits, then clipped to 0..255
};

struct DecodedImage {
  // 1-4 bands (CMYK: 4), as PIL holds them. kInt32: one uint16 per pixel in
  // native byte order, held as 2 bands of bytes so that crops copy it whole.
  Image8 pixels;
  PilMode mode = PilMode::kDirect;
};

// Decodes as PreprocessImageBytes does (including `max_pixels` and, for
// JPEGs, `fast_jpeg_shrink` towards `image_size`). Errors as above.
absl::StatusOr<DecodedImage> DecodeImageBytes(absl::string_view bytes,
                                              const PreprocessOptions& options);

// Image.resize((resized_width, resized_height)) as PIL does it for the
// image's mode, then .crop(crop), convert("RGB"), scale and normalize into
// `out` (CHW). `crop` must be an image_size square inside the resized image
// (INTERNAL otherwise: a caller's bug).
absl::Status ResizeCropNormalize(DecodedImage image, int resized_width, int resized_height,
                                 const CropRect& crop, const PreprocessOptions& options,
                                 float* out);

}  // namespace oclip

#endif  // OCLIP_MODEL_IMAGE_PREPROCESS_H_
