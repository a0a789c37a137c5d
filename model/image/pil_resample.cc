#include "model/image/pil_resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace oclip {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
constexpr double kBicubicSupport = 2.0;

// The taps of one output pixel: input indices [first, first + weights.size()).
template <typename Weight>
struct TapsOf {
  int first = 0;
  std::vector<Weight> weights;
};
using Taps = TapsOf<int32_t>;         // 8-bit images: 22-bit fixed point.
using DoubleTaps = TapsOf<double>;    // 32-bit images: the doubles themselves.

// Pillow's precompute_coeffs for one axis, for the output indices
// [begin, end): weights normalized to sum 1.
std::vector<DoubleTaps> ComputeDoubleTaps(int in_size, int out_size, int begin, int end) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = kBicubicSupport * filter_scale;
  std::vector<DoubleTaps> taps(end - begin);
  for (int xx = begin; xx < end; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filter_scale;
    // Pillow truncates with (int) casts here, on values that may be negative.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    DoubleTaps& t = taps[xx - begin];
    t.first = xmin;
    t.weights.assign(xmax, 0.0);
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = BicubicFilter((x + xmin - center + 0.5) * ss);
      t.weights[x] = w;
      total += w;
    }
    if (total != 0.0) {
      for (double& w : t.weights) w /= total;
    }
  }
  return taps;
}

// The same taps in Pillow's normalize_coeffs_8bpc fixed point.
std::vector<Taps> ComputeTaps(int in_size, int out_size, int begin, int end) {
  std::vector<Taps> taps;
  for (const DoubleTaps& d : ComputeDoubleTaps(in_size, out_size, begin, end)) {
    Taps& t = taps.emplace_back();
    t.first = d.first;
    t.weights.reserve(d.weights.size());
    for (double w : d.weights) {
      t.weights.push_back(static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits)
                                                     : 0.5 + w * (1 << kPrecisionBits)));
    }
  }
  return taps;
}

// The first source row and the number of rows that the vertical pass with
// `vtaps` reads: the crop's own rows when there is no vertical pass.
template <typename Weight>
std::pair<int, int> RowsRead(const std::vector<TapsOf<Weight>>& vtaps, const CropRect& crop) {
  if (vtaps.empty()) return {crop.top, crop.height};
  int last_row = 0;
  for (const TapsOf<Weight>& t : vtaps) {
    last_row = std::max(last_row, t.first + static_cast<int>(t.weights.size()));
  }
  return {vtaps.front().first, last_row - vtaps.front().first};
}

// Pillow accumulates in a 32-bit int; the sums of 8-bit pixels times 22-bit
// weights stay below 2^31 for normalized kernels.
inline uint8_t Clip8(int32_t v) {
  if (v >= (int32_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// out row j = Clip8(Σ_k weights_k · in row (first_j - row_offset + k)), over
// `width` bytes per row. Every output byte is the same integer sum as
// Pillow's; the loop runs over whole rows so that it vectorizes (with AVX2
// where the CPU has it).
__attribute__((target_clones("avx2", "default"))) void FilterRows(
    const uint8_t* in, size_t width, const std::vector<Taps>& taps, int row_offset,
    uint8_t* out) {
  // Reused across calls: fresh multi-megabyte buffers cost page faults.
  thread_local std::vector<int32_t> sums;
  sums.resize(width);
  for (size_t j = 0; j < taps.size(); ++j) {
    const Taps& t = taps[j];
    const uint8_t* src = in + static_cast<size_t>(t.first - row_offset) * width;
    std::fill(sums.begin(), sums.end(), 1 << (kPrecisionBits - 1));
    for (size_t k = 0; k < t.weights.size(); ++k) {
      const int32_t w = t.weights[k];
      const uint8_t* row = src + k * width;
      for (size_t i = 0; i < width; ++i) sums[i] += row[i] * w;
    }
    uint8_t* dst = out + j * width;
    for (size_t i = 0; i < width; ++i) dst[i] = Clip8(sums[i]);
  }
}

// Swaps the pixel axes of a [rows, cols, kBands] block: out[c][r] = in[r][c].
template <int kBands>
void TransposePixelsOf(const uint8_t* in, int rows, int cols, uint8_t* out) {
  const size_t out_stride = static_cast<size_t>(rows) * kBands;
  for (int r = 0; r < rows; ++r) {
    const uint8_t* src = in + static_cast<size_t>(r) * cols * kBands;
    uint8_t* dst = out + static_cast<size_t>(r) * kBands;
    for (int c = 0; c < cols; ++c, src += kBands, dst += out_stride) {
      for (int b = 0; b < kBands; ++b) dst[b] = src[b];
    }
  }
}

void TransposePixels(const uint8_t* in, int rows, int cols, int bands, uint8_t* out) {
  switch (bands) {
    case 1: return TransposePixelsOf<1>(in, rows, cols, out);
    case 2: return TransposePixelsOf<2>(in, rows, cols, out);
    case 3: return TransposePixelsOf<3>(in, rows, cols, out);
    default: return TransposePixelsOf<4>(in, rows, cols, out);
  }
}

}  // namespace

Image8 ResizeBicubicAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop) {
  const int bands = in.bands;
  const bool horizontal = resized_width != in.width;
  const bool vertical = resized_height != in.height;

  const std::vector<Taps> vtaps =
      vertical ? ComputeTaps(in.height, resized_height, crop.top, crop.top + crop.height)
               : std::vector<Taps>();
  const auto [first_row, rows] = RowsRead(vtaps, crop);

  // Horizontal pass over those rows, only the cropped columns. It runs as a
  // row filter on the transposed image, so that it vectorizes like the
  // vertical pass.
  Image8 mid;
  mid.width = crop.width;
  mid.height = rows;
  mid.bands = bands;
  mid.pixels.resize(static_cast<size_t>(mid.width) * mid.height * bands);
  if (horizontal) {
    const std::vector<Taps> htaps =
        ComputeTaps(in.width, resized_width, crop.left, crop.left + crop.width);
    thread_local std::vector<uint8_t> transposed, filtered;
    transposed.resize(static_cast<size_t>(in.width) * rows * bands);
    TransposePixels(in.row(first_row), rows, in.width, bands, transposed.data());
    filtered.resize(static_cast<size_t>(crop.width) * rows * bands);
    FilterRows(transposed.data(), static_cast<size_t>(rows) * bands, htaps, 0, filtered.data());
    TransposePixels(filtered.data(), crop.width, rows, bands, mid.pixels.data());
  } else {
    for (int y = 0; y < rows; ++y) {
      std::copy_n(in.row(first_row + y) + static_cast<size_t>(crop.left) * bands,
                  static_cast<size_t>(crop.width) * bands,
                  mid.pixels.data() + static_cast<size_t>(y) * mid.width * bands);
    }
  }
  if (!vertical) return mid;

  Image8 out;
  out.width = crop.width;
  out.height = crop.height;
  out.bands = bands;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * bands);
  FilterRows(mid.pixels.data(), static_cast<size_t>(mid.width) * bands, vtaps, first_row,
             out.pixels.data());
  return out;
}

namespace {

// Pillow's ROUND_UP for the 32-bit passes: half away from zero, truncated.
inline int32_t RoundUp(double f) { return static_cast<int32_t>(f >= 0.0 ? f + 0.5 : f - 0.5); }

inline uint8_t ClipInt32To8(int32_t v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

}  // namespace

Image8 ResizeInt32BicubicCropAndClip(const Image8& in, int resized_width, int resized_height,
                                     const CropRect& crop) {
  const bool horizontal = resized_width != in.width;
  const bool vertical = resized_height != in.height;
  const auto value = [&in](int x, int y) {
    uint16_t v;
    std::memcpy(&v, in.row(y) + static_cast<size_t>(x) * 2, sizeof(v));
    return static_cast<int32_t>(v);
  };

  const std::vector<DoubleTaps> vtaps =
      vertical ? ComputeDoubleTaps(in.height, resized_height, crop.top, crop.top + crop.height)
               : std::vector<DoubleTaps>();
  const auto [first_row, rows] = RowsRead(vtaps, crop);

  // Horizontal pass into an int32 intermediate, only the cropped columns.
  std::vector<int32_t> mid(static_cast<size_t>(rows) * crop.width);
  const std::vector<DoubleTaps> htaps =
      horizontal ? ComputeDoubleTaps(in.width, resized_width, crop.left, crop.left + crop.width)
                 : std::vector<DoubleTaps>();
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < crop.width; ++x) {
      int32_t v;
      if (horizontal) {
        const DoubleTaps& t = htaps[x];
        double ss = 0.0;
        for (size_t k = 0; k < t.weights.size(); ++k) {
          ss += value(t.first + static_cast<int>(k), first_row + y) * t.weights[k];
        }
        v = RoundUp(ss);
      } else {
        v = value(crop.left + x, first_row + y);
      }
      mid[static_cast<size_t>(y) * crop.width + x] = v;
    }
  }

  Image8 out;
  out.width = crop.width;
  out.height = crop.height;
  out.bands = 1;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height);
  for (int y = 0; y < crop.height; ++y) {
    for (int x = 0; x < crop.width; ++x) {
      int32_t v;
      if (vertical) {
        const DoubleTaps& t = vtaps[y];
        double ss = 0.0;
        for (size_t k = 0; k < t.weights.size(); ++k) {
          ss += mid[static_cast<size_t>(t.first - first_row + k) * crop.width + x] * t.weights[k];
        }
        v = RoundUp(ss);
      } else {
        v = mid[static_cast<size_t>(y) * crop.width + x];
      }
      out.pixels[static_cast<size_t>(y) * out.width + x] = ClipInt32To8(v);
    }
  }
  return out;
}

namespace {

// Pillow's source index for each output index in [begin, end): the position
// starts at half a step and is advanced by repeated addition (so its
// rounding matches), then truncated.
std::vector<int> NearestIndices(int in_size, int out_size, int begin, int end) {
  const double step = static_cast<double>(static_cast<float>(in_size)) / out_size;
  std::vector<int> indices(end - begin);
  double position = step * 0.5;
  for (int i = 0; i < end; ++i, position += step) {
    if (i >= begin) indices[i - begin] = std::min(static_cast<int>(position), in_size - 1);
  }
  return indices;
}

}  // namespace

Image8 ResizeNearestAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop) {
  const bool same_size = resized_width == in.width && resized_height == in.height;
  const std::vector<int> xs =
      same_size ? std::vector<int>() : NearestIndices(in.width, resized_width, crop.left,
                                                      crop.left + crop.width);
  const std::vector<int> ys =
      same_size ? std::vector<int>() : NearestIndices(in.height, resized_height, crop.top,
                                                      crop.top + crop.height);
  Image8 out;
  out.width = crop.width;
  out.height = crop.height;
  out.bands = in.bands;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * out.bands);
  for (int y = 0; y < crop.height; ++y) {
    const uint8_t* src = in.row(same_size ? crop.top + y : ys[y]);
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y) * out.width * out.bands;
    for (int x = 0; x < crop.width; ++x) {
      const int sx = same_size ? crop.left + x : xs[x];
      std::copy_n(src + static_cast<size_t>(sx) * in.bands, in.bands, dst + x * in.bands);
    }
  }
  return out;
}

void PremultiplyAlpha(Image8& image) {
  const int bands = image.bands;
  for (size_t i = 0; i < image.pixels.size(); i += bands) {
    const uint32_t alpha = image.pixels[i + bands - 1];
    for (int b = 0; b < bands - 1; ++b) {
      // Pillow's MULDIV255: (v * a + 128 + ((v * a + 128) >> 8)) >> 8.
      const uint32_t tmp = image.pixels[i + b] * alpha + 128;
      image.pixels[i + b] = static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
    }
  }
}

void UnpremultiplyAlpha(Image8& image) {
  const int bands = image.bands;
  for (size_t i = 0; i < image.pixels.size(); i += bands) {
    const uint32_t alpha = image.pixels[i + bands - 1];
    if (alpha == 255 || alpha == 0) continue;  // Pillow leaves these as they are.
    for (int b = 0; b < bands - 1; ++b) {
      image.pixels[i + b] =
          static_cast<uint8_t>(std::min<uint32_t>(255, 255 * image.pixels[i + b] / alpha));
    }
  }
}

}  // namespace oclip
