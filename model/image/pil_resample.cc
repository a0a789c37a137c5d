#include "model/image/pil_resample.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

// GCC 12 warns about the _mm512_undefined_* placeholders inside its own
// AVX-512 headers (-Wmaybe-uninitialized, a known false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

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

double BilinearFilter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
constexpr double kBilinearSupport = 1.0;

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

// Pillow accumulates in a 32-bit int, starting from half a unit; the sums of
// 8-bit pixels times 22-bit weights stay below 2^31 for normalized kernels.
// Its clip8 (>= 1 << 30: 255, <= 0: 0, else >> 22) equals clamping the
// arithmetic shift to 0..255.
constexpr int32_t kHalf = int32_t{1} << (kPrecisionBits - 1);
inline uint8_t Clip8(int32_t v) { return static_cast<uint8_t>(std::clamp(v >> kPrecisionBits, 0, 255)); }

// The horizontal pass works on blocks of kBlockRows rows, transposed so that
// input column x of the block is kColumnBytes contiguous bytes: row r's
// pixel at byte r * bands. 16 rows of up to 4 bands fill one cache line.
constexpr int kBlockRows = 16;
constexpr size_t kColumnBytes = 64;

bool simd_allowed = true;

bool UseAvx512() {
  static const bool supported =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl");
  return supported && simd_allowed;
}

// AVX-512 VBMI (byte permutes) as well, for the gathering transpose.
bool UseAvx512Vbmi() {
  static const bool supported = __builtin_cpu_supports("avx512vbmi");
  return supported && UseAvx512();
}

// Columns [lo, lo + span) of n rows into the column-major block.
template <int kBands>
void TransposeBlockPortable(const uint8_t* rows, size_t stride, int n, int lo, int span,
                            uint8_t* block) {
  for (int r = 0; r < n; ++r) {
    const uint8_t* src = rows + r * stride + static_cast<size_t>(lo) * kBands;
    uint8_t* dst = block + r * kBands;
    int x = 0;
    if constexpr (kBands == 3) {
      // 4-byte moves; the 4th byte lands in the next row's slot (written
      // after) or the padding. The last pixel is copied alone so as not to
      // read past the row.
      for (; x + 1 < span; ++x) std::memcpy(dst + x * kColumnBytes, src + x * 3, 4);
    }
    for (; x < span; ++x) std::memcpy(dst + x * kColumnBytes, src + x * kBands, kBands);
  }
}

// The byte permutation that packs the first kBands bytes of each of 16
// 4-byte lanes together (the rest of the vector zero).
template <int kBands>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) __m512i KeepFirstBandsOf16(
    std::integral_constant<int, kBands>) {
  alignas(64) uint8_t keep[64];
  for (int p = 0; p < 64; ++p) {
    keep[p] = static_cast<uint8_t>(p < 16 * kBands ? p / kBands * 4 + p % kBands : 0);
  }
  return _mm512_load_si512(keep);
}

// The same with AVX-512: one gather per column fetches 4 bytes of each of
// the n rows, a byte permute keeps the first kBands of each. The last pixels
// of a row are left to the portable loop (a 4-byte read there could pass the
// end of the buffer). Returns how many columns it did.
template <int kBands>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) int TransposeBlockAvx512(
    const uint8_t* rows, size_t stride, int n, int lo, int span, int width, uint8_t* block) {
  const int end = std::min(span, width - lo - 3);
  if (end <= 0) return 0;
  alignas(64) int32_t offsets[16];
  for (int r = 0; r < 16; ++r) offsets[r] = static_cast<int32_t>(r * stride);
  const __m512i row_offsets = _mm512_load_si512(offsets);
  const __m512i permute = KeepFirstBandsOf16(std::integral_constant<int, kBands>());
  const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1);
  const uint8_t* base = rows + static_cast<size_t>(lo) * kBands;
  for (int x = 0; x < end; ++x) {
    const __m512i index = _mm512_add_epi32(row_offsets, _mm512_set1_epi32(x * kBands));
    __m512i pixels = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, index, base, 1);
    if constexpr (kBands != 4) pixels = _mm512_permutexvar_epi8(permute, pixels);
    _mm512_storeu_si512(block + static_cast<size_t>(x) * kColumnBytes, pixels);
  }
  return end;
}

template <int kBands>
void TransposeBlock(const uint8_t* rows, size_t stride, int n, int lo, int span, int width,
                    uint8_t* block) {
  int done = 0;
  if (UseAvx512Vbmi()) done = TransposeBlockAvx512<kBands>(rows, stride, n, lo, span, width, block);
  TransposeBlockPortable<kBands>(rows, stride, n, lo + done, span - done,
                                 block + static_cast<size_t>(done) * kColumnBytes);
}

// Horizontal pass over one transposed block: output column j of the n rows.
template <int kBands>
void HorizontalBlockPortable(const uint8_t* block, const int* first, const int32_t* weights,
                             int max_taps, int outputs, int n, uint8_t* mid, size_t mid_stride) {
  constexpr int kLanes = kBlockRows * kBands;
  for (int j = 0; j < outputs; ++j) {
    int32_t sums[kLanes];
    for (int i = 0; i < kLanes; ++i) sums[i] = kHalf;
    const uint8_t* column = block + static_cast<size_t>(first[j]) * kColumnBytes;
    const int32_t* w = weights + static_cast<size_t>(j) * max_taps;
    for (int k = 0; k < max_taps; ++k, column += kColumnBytes) {
      for (int i = 0; i < kLanes; ++i) sums[i] += column[i] * w[k];
    }
    for (int r = 0; r < n; ++r) {
      for (int b = 0; b < kBands; ++b) {
        mid[r * mid_stride + static_cast<size_t>(j) * kBands + b] = Clip8(sums[r * kBands + b]);
      }
    }
  }
}

// 16 sums to 16 bytes, as Clip8 does each.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m128i Clip8x16(__m512i sums) {
  return _mm512_cvtusepi32_epi8(
      _mm512_max_epi32(_mm512_srai_epi32(sums, kPrecisionBits), _mm512_setzero_si512()));
}

// Results of 16 output columns (`results[i]`: column j0 + i, row r's pixel
// at byte r * kBands) into the n rows of `mid`, `count` columns: a gather per
// row picks 4 bytes of each column, a byte permute keeps kBands of them.
template <int kBands>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) void ScatterColumnsAvx512(
    const uint8_t* results, int count, int n, uint8_t* mid, size_t mid_stride) {
  alignas(64) int32_t offsets[16];
  for (int i = 0; i < 16; ++i) offsets[i] = static_cast<int32_t>(i * kColumnBytes);
  const __m512i columns = _mm512_load_si512(offsets);
  const __m512i permute = KeepFirstBandsOf16(std::integral_constant<int, kBands>());
  const int bytes = count * kBands;
  const __mmask64 store = bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
  for (int r = 0; r < n; ++r) {
    const __m512i index = _mm512_add_epi32(columns, _mm512_set1_epi32(r * kBands));
    __m512i pixels = _mm512_i32gather_epi32(index, results, 1);
    if constexpr (kBands != 4) pixels = _mm512_permutexvar_epi8(permute, pixels);
    _mm512_mask_storeu_epi8(mid + r * mid_stride, store, pixels);
  }
}

template <int kBands>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void HorizontalBlockAvx512(
    const uint8_t* block, const int* first, const int32_t* weights, int max_taps, int outputs,
    int n, bool vbmi, uint8_t* mid, size_t mid_stride) {
  alignas(64) uint8_t results[16][kColumnBytes];
  for (int j0 = 0; j0 < outputs; j0 += 16) {
    const int count = std::min(16, outputs - j0);
    for (int i = 0; i < count; ++i) {
      const int j = j0 + i;
      __m512i sums[kBands];
      for (int v = 0; v < kBands; ++v) sums[v] = _mm512_set1_epi32(kHalf);
      const uint8_t* column = block + static_cast<size_t>(first[j]) * kColumnBytes;
      const int32_t* w = weights + static_cast<size_t>(j) * max_taps;
      for (int k = 0; k < max_taps; ++k, column += kColumnBytes) {
        const __m512i weight = _mm512_set1_epi32(w[k]);
        for (int v = 0; v < kBands; ++v) {
          const __m512i pixels = _mm512_cvtepu8_epi32(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(column + 16 * v)));
          sums[v] = _mm512_add_epi32(sums[v], _mm512_mullo_epi32(pixels, weight));
        }
      }
      for (int v = 0; v < kBands; ++v) {
        _mm_store_si128(reinterpret_cast<__m128i*>(results[i] + 16 * v), Clip8x16(sums[v]));
      }
    }
    uint8_t* dst = mid + static_cast<size_t>(j0) * kBands;
    if (vbmi) {
      ScatterColumnsAvx512<kBands>(results[0], count, n, dst, mid_stride);
      continue;
    }
    for (int i = 0; i < count; ++i) {
      for (int r = 0; r < n; ++r) {
        std::memcpy(dst + r * mid_stride + i * kBands, results[i] + r * kBands, kBands);
      }
    }
  }
}

template <int kBands>
void HorizontalBlock(const uint8_t* block, const int* first, const int32_t* weights, int max_taps,
                     int outputs, int n, uint8_t* mid, size_t mid_stride) {
  if (UseAvx512()) {
    HorizontalBlockAvx512<kBands>(block, first, weights, max_taps, outputs, n, UseAvx512Vbmi(),
                                  mid, mid_stride);
  } else {
    HorizontalBlockPortable<kBands>(block, first, weights, max_taps, outputs, n, mid, mid_stride);
  }
}

// One output row of the vertical pass: out[i] = Clip8(Σ_k w_k · rows[k][i])
// over `width` bytes, rows[k] = top + k * stride.
__attribute__((target_clones("avx2", "default"))) void VerticalRowPortable(
    const uint8_t* top, size_t stride, const int32_t* w, int taps, size_t width,
    int32_t* sums, uint8_t* out) {
  std::fill(sums, sums + width, kHalf);
  for (int k = 0; k < taps; ++k) {
    const uint8_t* row = top + k * stride;
    const int32_t weight = w[k];
    for (size_t i = 0; i < width; ++i) sums[i] += row[i] * weight;
  }
  for (size_t i = 0; i < width; ++i) out[i] = Clip8(sums[i]);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void VerticalRowAvx512(
    const uint8_t* top, size_t stride, const int32_t* w, int taps, size_t width, uint8_t* out) {
  size_t i = 0;
  // 64 bytes at a time in four accumulators, then 16 at a time, then a masked tail.
  for (; i + 64 <= width; i += 64) {
    __m512i s0 = _mm512_set1_epi32(kHalf), s1 = s0, s2 = s0, s3 = s0;
    const uint8_t* row = top + i;
    for (int k = 0; k < taps; ++k, row += stride) {
      const __m512i weight = _mm512_set1_epi32(w[k]);
      const __m512i bytes = _mm512_loadu_si512(row);
      s0 = _mm512_add_epi32(s0, _mm512_mullo_epi32(
                                    _mm512_cvtepu8_epi32(_mm512_castsi512_si128(bytes)), weight));
      s1 = _mm512_add_epi32(s1, _mm512_mullo_epi32(
                                    _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, 1)),
                                    weight));
      s2 = _mm512_add_epi32(s2, _mm512_mullo_epi32(
                                    _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, 2)),
                                    weight));
      s3 = _mm512_add_epi32(s3, _mm512_mullo_epi32(
                                    _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, 3)),
                                    weight));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), Clip8x16(s0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 16), Clip8x16(s1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 32), Clip8x16(s2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 48), Clip8x16(s3));
  }
  for (; i < width; i += 16) {
    const size_t count = std::min<size_t>(16, width - i);
    const __mmask16 mask = static_cast<__mmask16>((1u << count) - 1);
    __m512i sum = _mm512_set1_epi32(kHalf);
    const uint8_t* row = top + i;
    for (int k = 0; k < taps; ++k, row += stride) {
      const __m512i pixels = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, row));
      sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(pixels, _mm512_set1_epi32(w[k])));
    }
    _mm_mask_storeu_epi8(out + i, mask, Clip8x16(sum));
  }
}

}  // namespace
#pragma GCC diagnostic pop

void CropResampler::AllowSimdForTesting(bool allow) { simd_allowed = allow; }

void CropResampler::ComputeAxis(int in_size, int out_size, int begin, int end,
                                ResampleFilter filter, Axis* axis) {
  const std::array<int, 5> key = {in_size, out_size, begin, end, static_cast<int>(filter)};
  if (key == axis->key) return;  // The same axis as the last image's.
  axis->key = key;
  axis->resized = in_size != out_size;
  if (!axis->resized) {
    axis->lo = begin;
    axis->hi = end;
    axis->max_taps = 0;
    return;
  }
  const bool bicubic = filter == ResampleFilter::kBicubic;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = (bicubic ? kBicubicSupport : kBilinearSupport) * filter_scale;
  const double ss = 1.0 / filter_scale;
  // Pillow's precompute_coeffs: input range and normalized weights per output.
  const int outputs = end - begin;
  std::vector<double>& raw = axis->scratch;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  raw.assign(static_cast<size_t>(outputs) * ksize, 0.0);
  axis->first.resize(outputs);
  std::vector<int>& counts = axis->counts;
  counts.resize(outputs);
  axis->lo = in_size;
  axis->hi = 0;
  for (int xx = begin; xx < end; ++xx) {
    const double center = (xx + 0.5) * scale;
    // Pillow truncates with (int) casts here, on values that may be negative.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = raw.data() + static_cast<size_t>(xx - begin) * ksize;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double arg = (x + xmin - center + 0.5) * ss;
      const double w = bicubic ? BicubicFilter(arg) : BilinearFilter(arg);
      k[x] = w;
      total += w;
    }
    if (total != 0.0) {
      for (int x = 0; x < xmax; ++x) k[x] /= total;
    }
    axis->first[xx - begin] = xmin;
    counts[xx - begin] = xmax;
    axis->lo = std::min(axis->lo, xmin);
    axis->hi = std::max(axis->hi, xmin + xmax);
  }
  axis->max_taps = *std::max_element(counts.begin(), counts.end());
  axis->weights.assign(static_cast<size_t>(outputs) * axis->max_taps, 0);
  for (int i = 0; i < outputs; ++i) {
    // Pillow's normalize_coeffs_8bpc, placed so that the padded taps stay
    // inside [lo, hi): an output near the end starts earlier, behind zeros.
    const int first = std::min(axis->first[i], axis->hi - axis->max_taps);
    const int shift = axis->first[i] - first;
    const double* k = raw.data() + static_cast<size_t>(i) * ksize;
    int32_t* w = axis->weights.data() + static_cast<size_t>(i) * axis->max_taps;
    for (int x = 0; x < counts[i]; ++x) {
      w[shift + x] = static_cast<int32_t>(k[x] < 0 ? -0.5 + k[x] * (1 << kPrecisionBits)
                                                   : 0.5 + k[x] * (1 << kPrecisionBits));
    }
    axis->first[i] = first - axis->lo;
  }
}

void CropResampler::Start(int width, int height, int bands, int resized_width,
                          int resized_height, const CropRect& crop, ResampleFilter filter) {
  bands_ = bands;
  crop_ = crop;
  ComputeAxis(width, resized_width, crop.left, crop.left + crop.width, filter, &columns_);
  ComputeAxis(height, resized_height, crop.top, crop.top + crop.height, filter, &rows_);
  mid_stride_ = static_cast<size_t>(crop.width) * bands;
  mid_.resize(mid_stride_ * (rows_.hi - rows_.lo));
  width_ = width;
  if (columns_.resized) {
    transposed_.resize(static_cast<size_t>(columns_.hi - columns_.lo) * kColumnBytes);
  }
}

int CropResampler::first_column() const { return columns_.lo; }
int CropResampler::end_column() const { return columns_.hi; }

void CropResampler::AddRows(int y, int count, const uint8_t* rows, size_t stride,
                            int first_column, int end_column) {
  // Columns are counted from the first one present.
  const int lo = columns_.lo - first_column;
  const int present = (end_column < 0 ? width_ : end_column) - first_column;
  const int begin = std::max(y, rows_.lo), end = std::min(y + count, rows_.hi);
  for (int row = begin; row < end; row += kBlockRows) {
    const int n = std::min(kBlockRows, end - row);
    const uint8_t* src = rows + static_cast<size_t>(row - y) * stride;
    uint8_t* mid = mid_.data() + static_cast<size_t>(row - rows_.lo) * mid_stride_;
    if (!columns_.resized) {
      for (int r = 0; r < n; ++r) {
        std::memcpy(mid + r * mid_stride_,
                    src + r * stride + static_cast<size_t>(crop_.left - first_column) * bands_,
                    mid_stride_);
      }
      continue;
    }
    const int span = columns_.hi - columns_.lo;
    uint8_t* block = transposed_.data();
    const int* first = columns_.first.data();
    const int32_t* weights = columns_.weights.data();
    const int taps = columns_.max_taps, outputs = crop_.width;
    switch (bands_) {
      case 1:
        TransposeBlock<1>(src, stride, n, lo, span, present, block);
        HorizontalBlock<1>(block, first, weights, taps, outputs, n, mid, mid_stride_);
        break;
      case 2:
        TransposeBlock<2>(src, stride, n, lo, span, present, block);
        HorizontalBlock<2>(block, first, weights, taps, outputs, n, mid, mid_stride_);
        break;
      case 3:
        TransposeBlock<3>(src, stride, n, lo, span, present, block);
        HorizontalBlock<3>(block, first, weights, taps, outputs, n, mid, mid_stride_);
        break;
      default:
        TransposeBlock<4>(src, stride, n, lo, span, present, block);
        HorizontalBlock<4>(block, first, weights, taps, outputs, n, mid, mid_stride_);
        break;
    }
  }
}

void CropResampler::Finish(absl::FunctionRef<void(int y, const uint8_t* row)> emit) {
  if (!rows_.resized) {
    for (int y = 0; y < crop_.height; ++y) emit(y, mid_.data() + y * mid_stride_);
    return;
  }
  out_row_.resize(mid_stride_);
  thread_local std::vector<int32_t> sums;
  const bool avx512 = UseAvx512();
  if (!avx512) sums.resize(mid_stride_);
  for (int y = 0; y < crop_.height; ++y) {
    const uint8_t* top = mid_.data() + static_cast<size_t>(rows_.first[y]) * mid_stride_;
    const int32_t* w = rows_.weights.data() + static_cast<size_t>(y) * rows_.max_taps;
    if (avx512) {
      VerticalRowAvx512(top, mid_stride_, w, rows_.max_taps, mid_stride_, out_row_.data());
    } else {
      VerticalRowPortable(top, mid_stride_, w, rows_.max_taps, mid_stride_, sums.data(),
                          out_row_.data());
    }
    emit(y, out_row_.data());
  }
}

Image8 ResizeBicubicAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop) {
  thread_local CropResampler resampler;
  resampler.Start(in.width, in.height, in.bands, resized_width, resized_height, crop);
  resampler.AddRows(0, in.height, in.pixels.data(), static_cast<size_t>(in.width) * in.bands);
  Image8 out;
  out.width = crop.width;
  out.height = crop.height;
  out.bands = in.bands;
  out.pixels.resize(static_cast<size_t>(out.width) * out.height * out.bands);
  const size_t row_bytes = static_cast<size_t>(out.width) * out.bands;
  resampler.Finish([&](int y, const uint8_t* row) {
    std::memcpy(out.pixels.data() + y * row_bytes, row, row_bytes);
  });
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

void UnpremultiplyAlpha(uint8_t* pixels, size_t n, int bands) {
  for (size_t i = 0; i < n * bands; i += bands) {
    const uint32_t alpha = pixels[i + bands - 1];
    if (alpha == 255 || alpha == 0) continue;  // Pillow leaves these as they are.
    for (int b = 0; b < bands - 1; ++b) {
      pixels[i + b] = static_cast<uint8_t>(std::min<uint32_t>(255, 255 * pixels[i + b] / alpha));
    }
  }
}

void UnpremultiplyAlpha(Image8& image) {
  UnpremultiplyAlpha(image.pixels.data(), static_cast<size_t>(image.width) * image.height,
                     image.bands);
}

}  // namespace oclip
