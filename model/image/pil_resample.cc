#include "model/image/pil_resample.h"

#include <algorithm>
#include <cmath>

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
struct Taps {
  int first = 0;
  std::vector<int32_t> weights;
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis, for the
// output indices [begin, end).
std::vector<Taps> ComputeTaps(int in_size, int out_size, int begin, int end) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = kBicubicSupport * filter_scale;
  std::vector<Taps> taps(end - begin);
  std::vector<double> weights;
  for (int xx = begin; xx < end; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filter_scale;
    // Pillow truncates with (int) casts here, on values that may be negative.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    weights.assign(xmax, 0.0);
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = BicubicFilter((x + xmin - center + 0.5) * ss);
      weights[x] = w;
      total += w;
    }
    Taps& t = taps[xx - begin];
    t.first = xmin;
    t.weights.resize(xmax);
    for (int x = 0; x < xmax; ++x) {
      const double w = total != 0.0 ? weights[x] / total : weights[x];
      t.weights[x] = static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits)
                                                : 0.5 + w * (1 << kPrecisionBits));
    }
  }
  return taps;
}

// Pillow accumulates in a 32-bit int; the sums of 8-bit pixels times 22-bit
// weights stay below 2^31 for normalized kernels.
inline uint8_t Clip8(int32_t v) {
  if (v >= (int32_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

}  // namespace

Image8 ResizeBicubicAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop) {
  const int bands = in.bands;
  const bool horizontal = resized_width != in.width;
  const bool vertical = resized_height != in.height;

  // Rows of the source that the vertical pass reads.
  std::vector<Taps> vtaps;
  int first_row = crop.top, last_row = crop.top + crop.height;
  if (vertical) {
    vtaps = ComputeTaps(in.height, resized_height, crop.top, crop.top + crop.height);
    first_row = vtaps.front().first;
    last_row = 0;
    for (const Taps& t : vtaps) {
      last_row = std::max(last_row, t.first + static_cast<int>(t.weights.size()));
    }
  }

  // Horizontal pass over those rows, only the cropped columns.
  Image8 mid;
  mid.width = crop.width;
  mid.height = last_row - first_row;
  mid.bands = bands;
  mid.pixels.resize(static_cast<size_t>(mid.width) * mid.height * bands);
  if (horizontal) {
    const std::vector<Taps> htaps =
        ComputeTaps(in.width, resized_width, crop.left, crop.left + crop.width);
    for (int y = 0; y < mid.height; ++y) {
      const uint8_t* src = in.row(first_row + y);
      uint8_t* dst = mid.pixels.data() + static_cast<size_t>(y) * mid.width * bands;
      for (int x = 0; x < crop.width; ++x) {
        const Taps& t = htaps[x];
        const uint8_t* p = src + static_cast<size_t>(t.first) * bands;
        const int32_t* w = t.weights.data();
        const int taps = static_cast<int>(t.weights.size());
        if (bands == 3) {  // The common case, unrolled over the bands.
          int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
          for (int k = 0; k < taps; ++k, p += 3) {
            s0 += p[0] * w[k];
            s1 += p[1] * w[k];
            s2 += p[2] * w[k];
          }
          dst[x * 3] = Clip8(s0);
          dst[x * 3 + 1] = Clip8(s1);
          dst[x * 3 + 2] = Clip8(s2);
          continue;
        }
        for (int b = 0; b < bands; ++b) {
          int32_t sum = 1 << (kPrecisionBits - 1);
          for (int k = 0; k < taps; ++k) sum += p[k * bands + b] * w[k];
          dst[x * bands + b] = Clip8(sum);
        }
      }
    }
  } else {
    for (int y = 0; y < mid.height; ++y) {
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
  const size_t stride = static_cast<size_t>(mid.width) * bands;
  // Row by row, tap-major: the inner loop runs over a whole row and vectorizes.
  std::vector<int32_t> sums(stride);
  for (int y = 0; y < crop.height; ++y) {
    const Taps& t = vtaps[y];
    const uint8_t* src = mid.pixels.data() + static_cast<size_t>(t.first - first_row) * stride;
    std::fill(sums.begin(), sums.end(), 1 << (kPrecisionBits - 1));
    for (size_t k = 0; k < t.weights.size(); ++k) {
      const int32_t w = t.weights[k];
      const uint8_t* row = src + k * stride;
      for (size_t i = 0; i < stride; ++i) sums[i] += row[i] * w;
    }
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y) * stride;
    for (size_t i = 0; i < stride; ++i) dst[i] = Clip8(sums[i]);
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
