// Pillow's bicubic resampling of 8-bit images, reproduced exactly: OpenCLIP's
// preprocessing resizes with PIL, and matching its pixels (not approximately,
// as libvips's own resize does) is what keeps image features at parity.
//
// Pillow's algorithm (libImaging/Resample.c): a separable convolution with the
// cubic kernel a = -0.5 whose support is widened by the downscale factor,
// coefficients normalized per output pixel and rounded to 22-bit fixed point,
// a horizontal pass into an 8-bit intermediate, then a vertical pass, each
// rounded and clamped to 0..255.
//
// Only the pixels inside `crop` are computed (the rest of the resized image
// would be cropped away); each computed pixel equals Pillow's bit for bit.
// Integer sums do not depend on their order, so the passes are free to run in
// whatever order vectorizes best: the horizontal pass filters blocks of 16
// rows at once (transposed, so that one vector holds a column of 16 pixels),
// the vertical pass whole rows, with AVX-512 where the CPU has it.

#ifndef OCLIP_MODEL_IMAGE_PIL_RESAMPLE_H_
#define OCLIP_MODEL_IMAGE_PIL_RESAMPLE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"

namespace oclip {

// Interleaved 8-bit pixels, row-major, `bands` values per pixel.
struct Image8 {
  int width = 0;
  int height = 0;
  int bands = 0;
  std::vector<uint8_t> pixels;

  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * bands; }
};

struct CropRect {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

// The two PIL filters oclip resizes with: BICUBIC (OpenCLIP's eval
// transform) and BILINEAR (PIL's triangle filter, support 1, with the same
// fixed-point arithmetic; used by the fast mode).
enum class ResampleFilter { kBicubic, kBilinear };

// Image.resize((resized_width, resized_height), filter).crop(crop) of an
// 8-bit image whose rows arrive in order, e.g. straight from a decoder, so
// that the whole image never has to be held: the horizontal pass runs on each
// block of rows as it arrives, the vertical pass in Finish(). Reusable: its
// buffers stay allocated from one image to the next. Not thread-safe.
class CropResampler {
 public:
  // Starts an image of width x height pixels of `bands` bytes each. `crop`
  // must lie inside the resized image. A same-size axis is a copy, as in PIL.
  void Start(int width, int height, int bands, int resized_width, int resized_height,
             const CropRect& crop, ResampleFilter filter = ResampleFilter::kBicubic);

  // The input rows the result depends on: [first_row(), end_row()).
  int first_row() const { return rows_.lo; }
  int end_row() const { return rows_.hi; }

  // The input columns the result depends on: [first_column(), end_column()).
  int first_column() const;
  int end_column() const;

  // Rows [y, y + count) of the input, `stride` bytes apart. Rows arrive in
  // order and cover [first_row(), end_row()) without gaps; rows outside that
  // range are ignored. Blocks of 16 or more rows per call run fastest. The
  // rows may hold only columns [first_column, end_column) (-1: the width), a
  // range that covers [first_column(), end_column()): `rows` points at
  // column first_column.
  void AddRows(int y, int count, const uint8_t* rows, size_t stride, int first_column = 0,
               int end_column = -1);

  // After the last needed row: `emit(y, row)` for each output row in order,
  // crop.width * bands bytes that stay valid until emit returns.
  void Finish(absl::FunctionRef<void(int y, const uint8_t* row)> emit);

  // Test hook: false runs the portable kernels even where AVX-512 is there.
  static void AllowSimdForTesting(bool allow);

 private:
  // One axis of the resize restricted to the crop: for output i, max_taps
  // weights (22-bit fixed point, zero-padded) on the inputs from lo +
  // first[i]. Padding keeps lo + first[i] + max_taps <= hi; zero weights add
  // nothing. Kept while the next image has the same geometry.
  struct Axis {
    std::array<int, 5> key = {-1, -1, -1, -1, -1};
    bool resized = false;  // false: the axis keeps its size (a copy)
    int lo = 0, hi = 0;    // the inputs any output reads
    int max_taps = 0;
    std::vector<int> first;
    std::vector<int32_t> weights;
    std::vector<int> counts;      // scratch
    std::vector<double> scratch;  // scratch
  };
  static void ComputeAxis(int in_size, int out_size, int begin, int end, ResampleFilter filter,
                          Axis* axis);

  int bands_ = 0;
  int width_ = 0;
  CropRect crop_;
  Axis columns_, rows_;
  // The horizontal pass's output: rows [rows_.lo, rows_.hi), crop columns.
  std::vector<uint8_t> mid_;
  size_t mid_stride_ = 0;
  std::vector<uint8_t> transposed_;  // one block of rows, column-major
  std::vector<uint8_t> out_row_;
};

// Image.resize((resized_width, resized_height), BICUBIC).crop(crop), with
// `crop` inside the resized image. A same-size resize is a copy, as in PIL.
Image8 ResizeBicubicAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop);

// For PIL's "I" images (16-bit grey PNGs): `in` holds one uint16 per pixel
// (native byte order, 2 bytes per pixel). Image.resize(..., BICUBIC) as
// Pillow's 32-bit path computes it (double coefficients, each pass rounded to
// an int32), .crop(crop), then convert("L")'s clip to 0..255: one band.
Image8 ResizeInt32BicubicCropAndClip(const Image8& in, int resized_width, int resized_height,
                                     const CropRect& crop);

// Image.resize((resized_width, resized_height), NEAREST).crop(crop), as PIL
// does it for palette ("P") images whatever filter is asked for: each output
// pixel copies the input pixel under its centre, positions accumulated in
// double precision exactly as Pillow's ImagingScaleAffine steps them.
Image8 ResizeNearestAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop);

// PIL's RGBA -> RGBa and back (and LA <-> La): Image.resize works on
// premultiplied pixels for images with alpha. The last band is alpha.
void PremultiplyAlpha(Image8& image);
void UnpremultiplyAlpha(Image8& image);
// The same on `n` pixels of `bands` bytes.
void UnpremultiplyAlpha(uint8_t* pixels, size_t n, int bands);

}  // namespace oclip

#endif  // OCLIP_MODEL_IMAGE_PIL_RESAMPLE_H_
