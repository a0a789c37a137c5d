// The AMX tile GEMMs (int8 and bf16x3) and the AVX-512 activation quantizer
// and splitter of model/amx_linear.h. Compiled alone with the AMX and AVX-512
// flags (model/CMakeLists.txt): it must include no header with inline C++ functions
// (LibTorch, <algorithm>, <vector>, ...), whose copies built with these
// instructions could replace the portable ones at link time. Only intrinsics
// and <cstdint>.

#include "model/amx_gemm.h"

#include <immintrin.h>

#include <cstdint>

#include "model/avx512_math.h"

// GCC 12 reports its own _mm512_undefined_* placeholders inside the AVX-512
// intrinsics as "may be used uninitialized" at -O3 (a known false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace oclip::amx_internal {
namespace {

using avx512_math::Bf16ToFloat;
using avx512_math::Exp;
using avx512_math::FirstLanes;
using avx512_math::LoadTileConfig;
using avx512_math::MultiplyBf16Block;
using avx512_math::Reciprocal;

// Round to nearest, ties to even (the default MXCSR mode), as nearbyint.
int32_t RoundToInt(float v) { return _mm_cvtss_si32(_mm_set_ss(v)); }

// 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) for x < 0: one
// exp(-|x|) in [0, 1], no overflow, full precision where the result is tiny.
inline __m512 Sigmoid(__m512 x) {
  const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
  const __m512 inv = Reciprocal(_mm512_add_ps(e, _mm512_set1_ps(1.0f)));
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_mul_ps(inv, negative, inv, e);
}

// erf(x) = x P(x^2) / Q(x^2) on [-4, 4], degrees 6 and 4 in x^2, and +-1
// beyond (erf(4) is 1 - 1.5e-8). The coefficients are scripts/fit_erf.py's
// near-minimax fit: 6e-8 in exact arithmetic, a few 1e-7 in float. No exp,
// unlike Abramowitz & Stegun 7.1.26: 16 vector operations against 30 (the
// GELU epilogue was an eighth of int8 ViT-B-32's image time). A NaN passes
// through the clamps (MINPS/MAXPS return their second operand).
inline __m512 Erf(__m512 x) {
  const __m512 c = _mm512_max_ps(_mm512_set1_ps(-4.0f), _mm512_min_ps(_mm512_set1_ps(4.0f), x));
  const __m512 t = _mm512_mul_ps(c, c);
  __m512 p = _mm512_set1_ps(1.92180174e-08f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.99106285e-06f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.000155670336f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.00429820269f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.0524503551f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.214055553f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.12837875f));
  __m512 q = _mm512_set1_ps(0.00109930686f);
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.0155617865f));
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.120847158f));
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.523029566f));
  q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(1.0f));
  // Q is in [1, 180] here.
  return _mm512_mul_ps(_mm512_mul_ps(c, p), Reciprocal(q));
}

// The epilogue's activation, chosen at compile time so that the block loop has
// no branch per vector. Same operation order as PyTorch's kernels:
// x * 0.5 * (1 + erf(x * M_SQRT1_2)) and x * sigmoid(x * 1.702).
template <EpilogueActivation kActivation>
inline __m512 Activate(__m512 v) {
  if constexpr (kActivation == EpilogueActivation::kGelu) {
    const __m512 half_v = _mm512_mul_ps(v, _mm512_set1_ps(0.5f));
    const __m512 erf = Erf(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
    return _mm512_mul_ps(half_v, _mm512_add_ps(erf, _mm512_set1_ps(1.0f)));
  } else if constexpr (kActivation == EpilogueActivation::kQuickGelu) {
    return _mm512_mul_ps(v, Sigmoid(_mm512_mul_ps(v, _mm512_set1_ps(1.702f))));
  } else if constexpr (kActivation == EpilogueActivation::kRelu) {
    // MAXPS returns its second operand where either is NaN: NaN stays NaN.
    return _mm512_max_ps(_mm512_setzero_ps(), v);
  } else {
    return v;
  }
}

// Applies f to count floats, 16 at a time (the tail masked).
template <typename F>
void ForEachVector(const float* x, float* y, int64_t count, F f) {
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 mask = FirstLanes(count - i);
    _mm512_mask_storeu_ps(y + i, mask, f(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

// Writes the 32 x 32 output block at (m0, n0) of either kernel's arguments:
// out[m, n] = activation(value(i, r, j, m, bias)) + (residual[m, n] or 0)
// (or activation(value + residual) where g.activation_after_residual), where
// value gives the biased linear result of row r of row tile i and
// column tile j (16 columns) as one vector, from the block's accumulators.
// One fp32 write per element: the activation and residual cost no extra pass.
template <EpilogueActivation kActivation, typename Args, typename Value>
inline void WriteBlock(const Args& g, int64_t m0, int64_t n0, Value value) {
  // The block's column constants, loaded once (out may alias nothing, but the
  // compiler cannot know that and would reload them for every row).
  __mmask16 masks[2];
  __m512 biases[2];
  int64_t column_tiles = 0;
  for (int64_t j = 0; j < 2; ++j) {
    const int64_t n = n0 + j * kTileRows;
    if (n >= g.n) break;
    masks[j] = FirstLanes(g.n - n);
    biases[j] =
        g.bias != nullptr ? _mm512_maskz_loadu_ps(masks[j], g.bias + n) : _mm512_setzero_ps();
    ++column_tiles;
  }
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t r = 0; r < kTileRows; ++r) {
      const int64_t m = m0 + i * kTileRows + r;
      if (m >= g.m) return;
      float* out_row = g.out + m * g.n + n0;
      const float* residual_row = g.residual != nullptr ? g.residual + m * g.n + n0 : nullptr;
      for (int64_t j = 0; j < column_tiles; ++j) {
        __m512 result = value(i, r, j, m, biases[j]);
        if (residual_row == nullptr) {
          result = Activate<kActivation>(result);
        } else {
          const __m512 residual = _mm512_maskz_loadu_ps(masks[j], residual_row + j * kTileRows);
          result = g.activation_after_residual
                       ? Activate<kActivation>(_mm512_add_ps(result, residual))
                       : _mm512_add_ps(Activate<kActivation>(result), residual);
        }
        _mm512_mask_storeu_ps(out_row + j * kTileRows, masks[j], result);
      }
    }
  }
}

// The int8 block from its four 16 x 16 int32 accumulator tiles (acc[2 i + j]
// holds rows m0 + 16 i, columns n0 + 16 j): dequantized with the row's and
// the column's scales and zero-point correction.
template <EpilogueActivation kActivation>
void Int8Epilogue(const GemmArgs& g, int64_t m0, int64_t n0, const int32_t (*acc)[256]) {
  // Column sums and scales are padded to n_padded, so whole vectors load.
  const __m512i sums[2] = {_mm512_loadu_si512(g.column_sums + n0),
                           _mm512_loadu_si512(g.column_sums + n0 + kTileRows)};
  const __m512 scales[2] = {_mm512_loadu_ps(g.column_scales + n0),
                            _mm512_loadu_ps(g.column_scales + n0 + kTileRows)};
  WriteBlock<kActivation>(g, m0, n0, [&](int64_t i, int64_t r, int64_t j, int64_t m, __m512 bias) {
    const __m512i sum = _mm512_load_si512(acc[2 * i + j] + r * 16);
    const __m512i correction = _mm512_mullo_epi32(_mm512_set1_epi32(g.zero_points[m]), sums[j]);
    const __m512 centered = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, correction));
    const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(g.row_scales[m]), scales[j]);
    return _mm512_fmadd_ps(centered, scale, bias);
  });
}

// The bf16x3 block from its four 16 x 16 fp32 accumulator tiles.
template <EpilogueActivation kActivation>
void Bf16x3Epilogue(const Bf16x3GemmArgs& g, int64_t m0, int64_t n0, const float (*acc)[256]) {
  WriteBlock<kActivation>(g, m0, n0, [&](int64_t i, int64_t r, int64_t j, int64_t, __m512 bias) {
    return _mm512_add_ps(_mm512_load_ps(acc[2 * i + j] + r * 16), bias);
  });
}

// The epilogue instantiation for an activation chosen at run time.
template <typename Function, template <EpilogueActivation> class Pick>
Function EpilogueFor(EpilogueActivation activation) {
  switch (activation) {
    case EpilogueActivation::kGelu:
      return Pick<EpilogueActivation::kGelu>::kFunction;
    case EpilogueActivation::kQuickGelu:
      return Pick<EpilogueActivation::kQuickGelu>::kFunction;
    case EpilogueActivation::kRelu:
      return Pick<EpilogueActivation::kRelu>::kFunction;
    case EpilogueActivation::kNone:
      break;
  }
  return Pick<EpilogueActivation::kNone>::kFunction;
}

using Int8EpilogueFunction = void (*)(const GemmArgs&, int64_t, int64_t, const int32_t (*)[256]);
using Bf16x3EpilogueFunction = void (*)(const Bf16x3GemmArgs&, int64_t, int64_t,
                                        const float (*)[256]);
template <EpilogueActivation kActivation>
struct PickInt8Epilogue {
  static constexpr Int8EpilogueFunction kFunction = &Int8Epilogue<kActivation>;
};
template <EpilogueActivation kActivation>
struct PickBf16x3Epilogue {
  static constexpr Bf16x3EpilogueFunction kFunction = &Bf16x3Epilogue<kActivation>;
};

// One row of x as the kernels read it: x itself, or LayerNorm(x) as
// v -> (v - mean) * rstd * gamma + beta with the row's mean and biased
// variance (torch::layer_norm's math in fp32). Lanes masked off read as 0.
class RowReader {
 public:
  RowReader(const float* row, int64_t k, const RowLayerNorm* norm) : row_(row), norm_(norm) {
    if (norm == nullptr) return;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) {
      sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(FirstLanes(k - j), row + j));
    }
    mean_ = _mm512_set1_ps(_mm512_reduce_add_ps(sum) / static_cast<float>(k));
    __m512 squares = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) {
      const __mmask16 mask = FirstLanes(k - j);
      const __m512 d = _mm512_maskz_sub_ps(mask, _mm512_maskz_loadu_ps(mask, row + j), mean_);
      squares = _mm512_fmadd_ps(d, d, squares);
    }
    const float variance = _mm512_reduce_add_ps(squares) / static_cast<float>(k);
    const float root = _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(variance + norm->eps)));
    rstd_ = _mm512_set1_ps(1.0f / root);
  }

  // Elements [j, j + 16) under mask.
  __m512 Load(int64_t j, __mmask16 mask) const {
    const __m512 v = _mm512_maskz_loadu_ps(mask, row_ + j);
    if (norm_ == nullptr) return v;
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(v, mean_), rstd_),
                           _mm512_maskz_loadu_ps(mask, norm_->gamma + j),
                           _mm512_maskz_loadu_ps(mask, norm_->beta + j));
  }

 private:
  const float* row_;
  const RowLayerNorm* norm_;
  __m512 mean_ = _mm512_setzero_ps();
  __m512 rstd_ = _mm512_set1_ps(1.0f);
};

// C += A·B on the 2 x 2 block, as avx512_math::MultiplyBf16Block in int8.
inline void MultiplyInt8Block() {
  _tile_dpbusd(4, 0, 2);
  _tile_dpbusd(5, 0, 3);
  _tile_dpbusd(6, 1, 2);
  _tile_dpbusd(7, 1, 3);
}

// The block loop both GEMMs share: rows [row_begin, row_end) item_rows at a
// time (kept in L2) against the weight panels of the column blocks given; for
// each 32 x 32 output block, the four accumulator tiles 4-7 are zeroed,
// accumulate(m0, n0) runs the block's k loop into them, and they are stored to
// acc for epilogue(g, m0, n0, acc). Loads and releases the tile configuration.
template <typename Args, typename Accumulator, typename Accumulate, typename Epilogue>
void ForEachOutputBlock(const Args& g, int64_t row_begin, int64_t row_end, int64_t col_block_begin,
                        int64_t col_block_end, int64_t item_rows, Accumulate accumulate,
                        Epilogue epilogue) {
  if (row_begin >= row_end || col_block_begin >= col_block_end) return;
  LoadTileConfig();
  alignas(64) Accumulator acc[4][256];
  for (int64_t m_begin = row_begin; m_begin < row_end; m_begin += item_rows) {
    const int64_t m_end = m_begin + item_rows < row_end ? m_begin + item_rows : row_end;
    for (int64_t col_block = col_block_begin; col_block < col_block_end; ++col_block) {
      const int64_t n0 = col_block * kBlockCols;
      for (int64_t m0 = m_begin; m0 < m_end; m0 += kBlockRows) {
        _tile_zero(4);
        _tile_zero(5);
        _tile_zero(6);
        _tile_zero(7);
        accumulate(m0, n0);
        _tile_stored(4, acc[0], 64);
        _tile_stored(5, acc[1], 64);
        _tile_stored(6, acc[2], 64);
        _tile_stored(7, acc[3], 64);
        epilogue(g, m0, n0, acc);
      }
    }
  }
  _tile_release();
}

}  // namespace

void VectorExp(const float* x, float* y, int64_t count) { ForEachVector(x, y, count, Exp); }

void VectorSigmoid(const float* x, float* y, int64_t count) { ForEachVector(x, y, count, Sigmoid); }

void VectorErf(const float* x, float* y, int64_t count) { ForEachVector(x, y, count, Erf); }

void QuantizeRowsToTiles(const float* x, int64_t rows, int64_t k, int64_t k_padded,
                         int64_t row_begin, int64_t row_end, uint8_t* a, float* scales,
                         int32_t* zero_points, const RowLayerNorm* norm) {
  const int64_t k_tiles = k_padded / kTileK;
  for (int64_t m = row_begin; m < row_end; ++m) {
    uint8_t* tile_row =
        a + ((m - row_begin) / kTileRows) * k_tiles * kTileBytes + (m % kTileRows) * kTileK;
    if (m >= rows) {
      for (int64_t t = 0; t < k_tiles; ++t) {
        _mm512_storeu_si512(tile_row + t * kTileBytes, _mm512_setzero_si512());
      }
      continue;
    }
    const RowReader reader(x + m * k, k, norm);
    __m512 lo = _mm512_setzero_ps();
    __m512 hi = _mm512_setzero_ps();
    for (int64_t j = 0; j < k; j += 16) {
      // Masked-off lanes read as 0, which the range includes anyway.
      const __m512 v = reader.Load(j, FirstLanes(k - j));
      lo = _mm512_min_ps(lo, v);
      hi = _mm512_max_ps(hi, v);
    }
    const float lo_value = _mm512_reduce_min_ps(lo);
    const float hi_value = _mm512_reduce_max_ps(hi);
    float scale = (hi_value - lo_value) / 255.0f;
    if (!(scale >= kMinScale)) scale = kMinScale;
    const float inv = 1.0f / scale;
    int32_t zero_point = RoundToInt(-lo_value * inv);
    zero_point = zero_point < 0 ? 0 : (zero_point > 255 ? 255 : zero_point);
    scales[m] = scale;
    zero_points[m] = zero_point;

    const __m512 inv_v = _mm512_set1_ps(inv);
    const __m512i zero_point_v = _mm512_set1_epi32(zero_point);
    const __m512i zero_i = _mm512_setzero_si512();
    for (int64_t j = 0; j < k_padded; j += 16) {
      const __mmask16 mask = FirstLanes(k - j);
      const __m512 v = reader.Load(j, mask);
      __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv_v)), zero_point_v);
      q = _mm512_max_epi32(q, zero_i);
      // Unsigned saturation clamps at 255; lanes past k become 0.
      const __m128i bytes = _mm512_maskz_cvtusepi32_epi8(mask, q);
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(tile_row + (j / kTileK) * kTileBytes + j % kTileK), bytes);
    }
  }
}

void AmxGemm(const GemmArgs& g, int64_t row_begin, int64_t row_end, int64_t col_block_begin,
             int64_t col_block_end) {
  // Tiles 0-1: A (16 rows x 64 u8), 2-3: B (16 x 64 s8, VNNI), 4-7: C (16 x 16 s32).
  const int64_t k_tiles = g.k_padded / kTileK;
  const int64_t strip = k_tiles * kTileBytes;  // bytes of 16 rows (A) or columns (B)
  ForEachOutputBlock<GemmArgs, int32_t>(
      g, row_begin, row_end, col_block_begin, col_block_end, kItemRows,
      [&](int64_t m0, int64_t n0) {
        const uint8_t* a0 = g.a + ((m0 - row_begin) / kTileRows) * strip;
        const uint8_t* a1 = a0 + strip;
        const int8_t* b0 = g.b + (n0 / kTileRows) * strip;
        const int8_t* b1 = b0 + strip;
        for (int64_t t = 0; t < k_tiles; ++t) {
          const int64_t offset = t * kTileBytes;
          _tile_loadd(0, a0 + offset, 64);
          _tile_loadd(1, a1 + offset, 64);
          _tile_loadd(2, b0 + offset, 64);
          _tile_loadd(3, b1 + offset, 64);
          MultiplyInt8Block();
        }
      },
      EpilogueFor<Int8EpilogueFunction, PickInt8Epilogue>(g.activation));
}

namespace {

// Writes 32 values (two vectors) as hi and lo bfloat16, each rounded to
// nearest even: hi = bf16(v), lo = bf16(v - hi).
inline void SplitToBf16(__m512 v0, __m512 v1, uint16_t* hi_out, uint16_t* lo_out) {
  const __m512i hi = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(v1, v0));
  const __m512 rest0 = _mm512_sub_ps(v0, Bf16ToFloat(_mm512_castsi512_si256(hi)));
  const __m512 rest1 = _mm512_sub_ps(v1, Bf16ToFloat(_mm512_extracti64x4_epi64(hi, 1)));
  const __m512i lo = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(rest1, rest0));
  _mm512_storeu_si512(hi_out, hi);
  _mm512_storeu_si512(lo_out, lo);
}

}  // namespace

void SplitRowsToBf16Tiles(const float* x, int64_t rows, int64_t k, int64_t k_padded,
                          int64_t row_begin, int64_t row_end, uint16_t* a,
                          const RowLayerNorm* norm) {
  const int64_t k_tiles = k_padded / kBf16TileK;
  const int64_t tile_elements = kTileBytes / 2;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t m = row_begin; m < row_end; ++m) {
    uint16_t* hi_row = a + ((m - row_begin) / kTileRows) * 2 * k_tiles * tile_elements +
                       (m % kTileRows) * kBf16TileK;
    uint16_t* lo_row = hi_row + k_tiles * tile_elements;
    if (m >= rows) {
      for (int64_t t = 0; t < k_tiles; ++t) {
        SplitToBf16(zero, zero, hi_row + t * tile_elements, lo_row + t * tile_elements);
      }
      continue;
    }
    const RowReader reader(x + m * k, k, norm);
    for (int64_t j = 0; j < k_padded; j += kBf16TileK) {
      // 32 values, zeros past k.
      SplitToBf16(reader.Load(j, FirstLanes(k - j)), reader.Load(j + 16, FirstLanes(k - j - 16)),
                  hi_row + (j / kBf16TileK) * tile_elements,
                  lo_row + (j / kBf16TileK) * tile_elements);
    }
  }
}

void SplitPatchRowsToBf16Tiles(const float* x, int64_t batch, int64_t height, int64_t width,
                               int64_t channels, int64_t row_begin, int64_t row_end, uint16_t* a) {
  const int64_t channels_padded = (channels + kBf16TileK - 1) / kBf16TileK * kBf16TileK;
  const int64_t k_tiles = 9 * channels_padded / kBf16TileK;
  const int64_t tile_elements = kTileBytes / 2;
  const int64_t rows = batch * height * width;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t m = row_begin; m < row_end; ++m) {
    uint16_t* hi_row = a + ((m - row_begin) / kTileRows) * 2 * k_tiles * tile_elements +
                       (m % kTileRows) * kBf16TileK;
    uint16_t* lo_row = hi_row + k_tiles * tile_elements;
    const int64_t image = m / (height * width);
    const int64_t y = (m / width) % height;
    const int64_t x_position = m % width;
    for (int64_t tap = 0; tap < 9; ++tap) {
      const int64_t source_y = y + tap / 3 - 1;
      const int64_t source_x = x_position + tap % 3 - 1;
      const bool inside =
          m < rows && source_y >= 0 && source_y < height && source_x >= 0 && source_x < width;
      const float* pixel =
          inside ? x + ((image * height + source_y) * width + source_x) * channels : nullptr;
      for (int64_t c = 0; c < channels_padded; c += kBf16TileK) {
        const int64_t tile = (tap * channels_padded + c) / kBf16TileK;
        const __m512 v0 =
            inside ? _mm512_maskz_loadu_ps(FirstLanes(channels - c), pixel + c) : zero;
        const __m512 v1 =
            inside ? _mm512_maskz_loadu_ps(FirstLanes(channels - c - 16), pixel + c + 16) : zero;
        SplitToBf16(v0, v1, hi_row + tile * tile_elements, lo_row + tile * tile_elements);
      }
    }
  }
}

void AmxBf16x3Gemm(const Bf16x3GemmArgs& g, int64_t row_begin, int64_t row_end,
                   int64_t col_block_begin, int64_t col_block_end) {
  // Tiles 0-1: A (16 rows x 32 bf16), 2-3: B (16 x 32 bf16, VNNI pairs),
  // 4-7: C (16 x 16 fp32). Three products per k step share the accumulators,
  // ordered so that each of the eight tiles is loaded once: a_lo b_hi, then
  // a_hi b_hi (A reloaded), then a_hi b_lo (B reloaded). Tile loads, not
  // the products, bound this loop on a busy core.
  const int64_t tile_elements = kTileBytes / 2;
  const int64_t k_tiles = g.k_padded / kBf16TileK;
  const int64_t strip = 2 * k_tiles * tile_elements;  // elements of 16 rows (A) or columns (B)
  const int64_t lo_offset = k_tiles * tile_elements;
  ForEachOutputBlock<Bf16x3GemmArgs, float>(
      g, row_begin, row_end, col_block_begin, col_block_end, kBf16ItemRows,
      [&](int64_t m0, int64_t n0) {
        const uint16_t* a0 = g.a + ((m0 - row_begin) / kTileRows) * strip;
        const uint16_t* a1 = a0 + strip;
        const uint16_t* b0 = g.b + (n0 / kTileRows) * strip;
        const uint16_t* b1 = b0 + strip;
        for (int64_t t = 0; t < k_tiles; ++t) {
          const int64_t hi = t * tile_elements;
          const int64_t lo = hi + lo_offset;
          _tile_loadd(0, a0 + lo, 64);
          _tile_loadd(1, a1 + lo, 64);
          _tile_loadd(2, b0 + hi, 64);
          _tile_loadd(3, b1 + hi, 64);
          MultiplyBf16Block();
          _tile_loadd(0, a0 + hi, 64);
          _tile_loadd(1, a1 + hi, 64);
          MultiplyBf16Block();
          _tile_loadd(2, b0 + lo, 64);
          _tile_loadd(3, b1 + lo, 64);
          MultiplyBf16Block();
        }
      },
      EpilogueFor<Bf16x3EpilogueFunction, PickBf16x3Epilogue>(g.activation));
}

}  // namespace oclip::amx_internal
