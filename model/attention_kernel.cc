// One attention head with AVX-512 (model/attention_kernel.h). Compiled with
// the AVX-512 flags (model/CMakeLists.txt); includes only intrinsics and
// <cstdint>.

#include "model/attention_kernel.h"

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

using avx512_math::Exp;
using avx512_math::FirstLanes;

// Query rows and 16-float vectors per register block: 4 x 4 accumulators.
constexpr int64_t kBlockQueries = 4;
constexpr int64_t kBlockVectors = 4;

int64_t RoundUpTo16(int64_t n) { return (n + 15) / 16 * 16; }

// Transposes the 16 x 16 block in r (r[i] = row i) in place: 32-bit pairs,
// 64-bit pairs, then 128-bit lanes twice.
inline void Transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);      // per lane: a0 b0 a1 b1
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);  // per lane: a2 b2 a3 b3
  }
  for (int i = 0; i < 16; i += 4) {
    for (int half = 0; half < 2; ++half) {
      const __m512d lo = _mm512_castps_pd(t[i + half]);
      const __m512d hi = _mm512_castps_pd(t[i + half + 2]);
      // Per lane: rows i..i+3 of column 2 half, then of column 2 half + 1.
      r[i + 2 * half] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
      r[i + 2 * half + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
    }
  }
  // r[4 g + c], lane l: rows 4g..4g+3 of column 4 l + c.
  for (int g = 0; g < 16; g += 8) {
    for (int c = 0; c < 4; ++c) {
      t[g + 2 * c] = _mm512_shuffle_f32x4(r[g + c], r[g + 4 + c], 0x88);
      t[g + 2 * c + 1] = _mm512_shuffle_f32x4(r[g + c], r[g + 4 + c], 0xdd);
    }
  }
  // t[8 h + 2 c + s], lanes 0-3: rows 8h..8h+3 of column c + 4 s, of column
  // c + 4 s + 8, rows 8h+4..8h+7 of column c + 4 s, of column c + 4 s + 8.
  for (int c = 0; c < 4; ++c) {
    for (int s = 0; s < 2; ++s) {
      const __m512 top = t[2 * c + s], bottom = t[8 + 2 * c + s];
      r[c + 4 * s] = _mm512_shuffle_f32x4(top, bottom, 0x88);
      r[c + 4 * s + 8] = _mm512_shuffle_f32x4(top, bottom, 0xdd);
    }
  }
}

// keys_t[d * keys_padded + j] = k[j, d], zero for j >= keys: the scores'
// inner loop then reads 16 keys of one dimension as one vector.
void TransposeKeys(const AttentionHead& h, int64_t keys_padded, float* keys_t) {
  for (int64_t j0 = 0; j0 < keys_padded; j0 += 16) {
    for (int64_t d0 = 0; d0 < h.dim; d0 += 16) {
      const __mmask16 columns = FirstLanes(h.dim - d0);
      __m512 block[16];
      for (int64_t j = 0; j < 16; ++j) {
        block[j] = j0 + j < h.keys
                       ? _mm512_maskz_loadu_ps(columns, h.k + (j0 + j) * h.k_stride + d0)
                       : _mm512_setzero_ps();
      }
      Transpose16x16(block);
      const int64_t rows = h.dim - d0 < 16 ? h.dim - d0 : 16;
      for (int64_t d = 0; d < rows; ++d) {
        _mm512_storeu_ps(keys_t + (d0 + d) * keys_padded + j0, block[d]);
      }
    }
  }
}

// scores[i, j] = (q[i] * scale)·k[j] + mask[i, j] for the queries [i0, i0 +
// rows) and the key vectors [v0, v0 + kVectors), on 4 x kVectors registers.
template <int kVectors>
void ScoreBlock(const AttentionHead& h, const float* keys_t, int64_t keys_padded, int64_t i0,
                int64_t rows, int64_t v0, float* scores) {
  __m512 acc[kBlockQueries][kVectors];
  for (auto& row : acc) {
    for (auto& vector : row) vector = _mm512_setzero_ps();
  }
  const __m512 scale = _mm512_set1_ps(h.scale);
  const float* q_rows[kBlockQueries];
  for (int64_t r = 0; r < kBlockQueries; ++r) {
    q_rows[r] = h.q + (i0 + (r < rows ? r : rows - 1)) * h.q_stride;
  }
  for (int64_t d = 0; d < h.dim; ++d) {
    const float* keys = keys_t + d * keys_padded + v0 * 16;
    __m512 k[kVectors];
    for (int c = 0; c < kVectors; ++c) k[c] = _mm512_loadu_ps(keys + c * 16);
    for (int64_t r = 0; r < kBlockQueries; ++r) {
      // As PyTorch: q * scale rounded to float, then the product.
      const __m512 q = _mm512_mul_ps(_mm512_set1_ps(q_rows[r][d]), scale);
      for (int c = 0; c < kVectors; ++c) acc[r][c] = _mm512_fmadd_ps(q, k[c], acc[r][c]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    for (int c = 0; c < kVectors; ++c) {
      const int64_t j = (v0 + c) * 16;
      __m512 score = acc[r][c];
      if (h.mask != nullptr) {
        score = _mm512_add_ps(
            score, _mm512_maskz_loadu_ps(FirstLanes(h.keys - j), h.mask + i * h.mask_stride + j));
      }
      _mm512_storeu_ps(scores + i * keys_padded + j, score);
    }
  }
}

// The row's scores -> probabilities in place; lanes past keys become 0.
void SoftmaxRow(float* row, int64_t keys, int64_t keys_padded) {
  const __m512 minus_infinity = _mm512_set1_ps(-__builtin_inff());
  __m512 max = minus_infinity;
  for (int64_t j = 0; j < keys_padded; j += 16) {
    max = _mm512_mask_max_ps(max, FirstLanes(keys - j), max, _mm512_loadu_ps(row + j));
  }
  const __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < keys_padded; j += 16) {
    const __m512 x = _mm512_loadu_ps(row + j);
    // A -inf score (a masked key) gives exactly 0, as exp(-inf) does.
    const __mmask16 live =
        FirstLanes(keys - j) & _mm512_cmp_ps_mask(x, minus_infinity, _CMP_NEQ_UQ);
    const __m512 e = _mm512_maskz_mov_ps(live, Exp(_mm512_sub_ps(x, row_max)));
    sum = _mm512_add_ps(sum, e);
    _mm512_storeu_ps(row + j, e);
  }
  const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t j = 0; j < keys_padded; j += 16) {
    _mm512_storeu_ps(row + j, _mm512_mul_ps(_mm512_loadu_ps(row + j), inverse));
  }
}

// out[i, d] = sum_j p[i, j] v[j, d] for the queries [i0, i0 + rows) and the
// dimensions [d0, d0 + 16 kVectors) (masked past dim).
template <int kVectors>
void WeightedValueBlock(const AttentionHead& h, const float* probabilities, int64_t keys_padded,
                        int64_t i0, int64_t rows, int64_t d0) {
  __m512 acc[kBlockQueries][kVectors];
  for (auto& row : acc) {
    for (auto& vector : row) vector = _mm512_setzero_ps();
  }
  __mmask16 masks[kVectors];
  for (int c = 0; c < kVectors; ++c) masks[c] = FirstLanes(h.dim - d0 - c * 16);
  const float* p_rows[kBlockQueries];
  for (int64_t r = 0; r < kBlockQueries; ++r) {
    p_rows[r] = probabilities + (i0 + (r < rows ? r : rows - 1)) * keys_padded;
  }
  for (int64_t j = 0; j < h.keys; ++j) {
    const float* values = h.v + j * h.v_stride + d0;
    __m512 v[kVectors];
    for (int c = 0; c < kVectors; ++c) v[c] = _mm512_maskz_loadu_ps(masks[c], values + c * 16);
    for (int64_t r = 0; r < kBlockQueries; ++r) {
      const __m512 p = _mm512_set1_ps(p_rows[r][j]);
      for (int c = 0; c < kVectors; ++c) acc[r][c] = _mm512_fmadd_ps(p, v[c], acc[r][c]);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* out = h.out + (i0 + r) * h.out_stride + d0;
    for (int c = 0; c < kVectors; ++c) _mm512_mask_storeu_ps(out + c * 16, masks[c], acc[r][c]);
  }
}

// Calls Block<n>::Run(args..., first) over [0, count) vectors, kBlockVectors at
// a time (n = kBlockVectors), then once with n = the rest.
template <template <int> class Block, typename... Args>
void ForEachVectorBlock(int64_t count, const Args&... args) {
  int64_t first = 0;
  for (; first + kBlockVectors <= count; first += kBlockVectors) {
    Block<kBlockVectors>::Run(args..., first);
  }
  switch (count - first) {
    case 3:
      Block<3>::Run(args..., first);
      break;
    case 2:
      Block<2>::Run(args..., first);
      break;
    case 1:
      Block<1>::Run(args..., first);
      break;
    default:
      break;
  }
}

template <int kVectors>
struct Scores {
  static void Run(const AttentionHead& h, const float* keys_t, int64_t keys_padded, int64_t i0,
                  int64_t rows, float* scores, int64_t v0) {
    ScoreBlock<kVectors>(h, keys_t, keys_padded, i0, rows, v0, scores);
  }
};

template <int kVectors>
struct WeightedValues {
  static void Run(const AttentionHead& h, const float* probabilities, int64_t keys_padded,
                  int64_t i0, int64_t rows, int64_t v0) {
    WeightedValueBlock<kVectors>(h, probabilities, keys_padded, i0, rows, v0 * 16);
  }
};

}  // namespace

int64_t AttentionScratchFloats(int64_t queries, int64_t keys, int64_t dim) {
  return (dim + queries) * RoundUpTo16(keys);
}

void AttendHead(const AttentionHead& h, float* scratch) {
  const int64_t keys_padded = RoundUpTo16(h.keys);
  float* keys_t = scratch;                             // [dim, keys_padded]
  float* scores = scratch + h.dim * keys_padded;       // [queries, keys_padded]
  TransposeKeys(h, keys_padded, keys_t);
  for (int64_t i0 = 0; i0 < h.queries; i0 += kBlockQueries) {
    const int64_t rows = h.queries - i0 < kBlockQueries ? h.queries - i0 : kBlockQueries;
    ForEachVectorBlock<Scores>(keys_padded / 16, h, static_cast<const float*>(keys_t),
                               keys_padded, i0, rows, scores);
    for (int64_t r = 0; r < rows; ++r) SoftmaxRow(scores + (i0 + r) * keys_padded, h.keys, keys_padded);
    ForEachVectorBlock<WeightedValues>(RoundUpTo16(h.dim) / 16, h,
                                       static_cast<const float*>(scores), keys_padded, i0, rows);
  }
}

}  // namespace oclip::amx_internal
