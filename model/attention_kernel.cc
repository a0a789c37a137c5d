// Attention heads in fp32 with AVX-512, or in bf16 on AMX tiles
// (model/attention_kernel.h). Compiled with the AMX/AVX-512 flags
// (model/CMakeLists.txt); includes only intrinsics and <cstdint>.

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
using avx512_math::LoadTileConfig;
using avx512_math::MultiplyBf16Block;

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

// One head in fp32 (see AttendHeads).
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

// Head h of the group.
AttentionHead HeadOf(const AttentionHeads& g, int64_t h) {
  AttentionHead head = g.first;
  head.q += h * g.q_head_stride;
  head.k += h * g.k_head_stride;
  head.v += h * g.v_head_stride;
  if (head.mask != nullptr) head.mask += h * g.mask_head_stride;
  head.out += h * g.out_head_stride;
  return head;
}

// ---- bf16 on AMX tiles ----
//
// Every operand tile is 16 rows of 32 bfloat16 (64 bytes), every accumulator
// 16 x 16 fp32; each product runs on 2 x 2 tiles, so queries, keys and the
// head's dimensions are padded with zeros to multiples of 32. The scratch
// holds, for each head of the group in turn, its operand tiles (bf16
// elements; "strip" s covers rows, keys or dimensions [16 s, 16 s + 16),
// "tile" t a step of 32 along the product's k):
//   q  A tiles of q * scale:       (s * dim_tiles + t) * 512 + row % 16 * 32 + d % 32
//   k  B tiles (VNNI) for q·kᵀ:     (s * dim_tiles + t) * 512 + (d % 32 / 2) * 32
//                                   + key % 16 * 2 + d % 2
//   v  B tiles (VNNI) for p·v:     (s * key_tiles + t) * 512 + (key % 32 / 2) * 32
//                                   + d % 16 * 2 + key % 2
// then what one block of 32 queries needs while it is computed: the A tiles
// of its probabilities (bf16), its scores [32, keys_padded] and its output
// [32, 32] (fp32).

constexpr int64_t kTileElements = 512;  // bf16 per tile
constexpr int64_t kBlock = 32;          // rows, keys or dimensions per 2 x 2 tiles

int64_t RoundUpTo32(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

struct Bf16Layout {
  Bf16Layout(int64_t queries, int64_t keys, int64_t dim)
      : queries_padded(RoundUpTo32(queries)),
        keys_padded(RoundUpTo32(keys)),
        dim_padded(RoundUpTo32(dim)),
        key_tiles(keys_padded / kBlock),
        dim_tiles(dim_padded / kBlock) {}

  int64_t QElements() const { return queries_padded * dim_padded; }
  int64_t KElements() const { return keys_padded * dim_padded; }
  int64_t VElements() const { return keys_padded * dim_padded; }
  int64_t HeadElements() const { return QElements() + KElements() + VElements(); }
  int64_t PElements() const { return kBlock * keys_padded; }
  int64_t ScoreFloats() const { return kBlock * keys_padded; }
  int64_t OutFloats() const { return kBlock * kBlock; }
  int64_t Bytes(int64_t heads) const {
    return 2 * (heads * HeadElements() + PElements()) + 4 * (ScoreFloats() + OutFloats());
  }

  int64_t queries_padded, keys_padded, dim_padded, key_tiles, dim_tiles;
};

// 32 floats as bfloat16 (nearest even): low's in elements 0-15, high's in
// 16-31, so that 32-bit lane r holds elements 2r and 2r + 1.
inline __m512i ToBf16(__m512 low, __m512 high) {
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(high, low));
}

// 16 floats from row[d, d + 16) (masked past dim; zeros where row is null).
inline __m512 LoadSegment(const float* row, int64_t d, int64_t dim) {
  if (row == nullptr) return _mm512_setzero_ps();
  return _mm512_maskz_loadu_ps(FirstLanes(dim - d), row + d);
}

// The pack functions walk the group's rows in memory order, each row across
// all the heads, and write head h's tiles at tiles + h * HeadElements().

void PackQueries(const AttentionHeads& g, const Bf16Layout& l, uint16_t* tiles) {
  const AttentionHead& h0 = g.first;
  const __m512 scale = _mm512_set1_ps(h0.scale);
  for (int64_t i = 0; i < l.queries_padded; ++i) {
    for (int64_t h = 0; h < g.count; ++h) {
      uint16_t* row = tiles + h * l.HeadElements() + (i / 16) * l.dim_tiles * kTileElements +
                      (i % 16) * kBlock;
      const float* q = i < h0.queries ? h0.q + h * g.q_head_stride + i * h0.q_stride : nullptr;
      for (int64_t t = 0; t < l.dim_tiles; ++t) {
        // As PyTorch: q * scale rounded first (to float here, then to bf16).
        const __m512 low = _mm512_mul_ps(LoadSegment(q, t * kBlock, h0.dim), scale);
        const __m512 high = _mm512_mul_ps(LoadSegment(q, t * kBlock + 16, h0.dim), scale);
        _mm512_storeu_si512(row + t * kTileElements, ToBf16(low, high));
      }
    }
  }
}

// Sixteen keys' 32 dimensions as bf16 pairs, one key per register, then
// transposed: register r holds the pair (2r, 2r + 1) of every key, which is
// the B tile's row r.
void PackKeys(const AttentionHeads& g, const Bf16Layout& l, uint16_t* tiles) {
  const AttentionHead& h0 = g.first;
  for (int64_t j0 = 0; j0 < l.keys_padded; j0 += 16) {
    for (int64_t h = 0; h < g.count; ++h) {
      uint16_t* strip = tiles + h * l.HeadElements() + l.QElements() +
                        (j0 / 16) * l.dim_tiles * kTileElements;
      for (int64_t t = 0; t < l.dim_tiles; ++t) {
        const int64_t d = t * kBlock;
        __m512 block[16];
        for (int64_t j = 0; j < 16; ++j) {
          const float* k =
              j0 + j < h0.keys ? h0.k + h * g.k_head_stride + (j0 + j) * h0.k_stride : nullptr;
          block[j] = _mm512_castsi512_ps(
              ToBf16(LoadSegment(k, d, h0.dim), LoadSegment(k, d + 16, h0.dim)));
        }
        Transpose16x16(block);
        uint16_t* tile = strip + t * kTileElements;
        for (int64_t r = 0; r < 16; ++r) {
          _mm512_storeu_ps(reinterpret_cast<float*>(tile + r * kBlock), block[r]);
        }
      }
    }
  }
}

// Two keys' values as bf16, interleaved: B tile row r of key step t holds
// (v[32 t + 2 r, d], v[32 t + 2 r + 1, d]) for the strip's 16 dimensions.
void PackValues(const AttentionHeads& g, const Bf16Layout& l, uint16_t* tiles) {
  alignas(64) static constexpr uint16_t kInterleave[32] = {
      0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i interleave = _mm512_load_si512(kInterleave);
  const AttentionHead& h0 = g.first;
  for (int64_t t = 0; t < l.key_tiles; ++t) {
    for (int64_t r = 0; r < 16; ++r) {
      const int64_t j = t * kBlock + 2 * r;
      for (int64_t h = 0; h < g.count; ++h) {
        const float* head_v = h0.v + h * g.v_head_stride;
        const float* even = j < h0.keys ? head_v + j * h0.v_stride : nullptr;
        const float* odd = j + 1 < h0.keys ? head_v + (j + 1) * h0.v_stride : nullptr;
        uint16_t* v_tiles = tiles + h * l.HeadElements() + l.QElements() + l.KElements();
        for (int64_t s = 0; s < l.dim_padded / 16; ++s) {
          const __m512i pairs = _mm512_permutexvar_epi16(
              interleave,
              ToBf16(LoadSegment(even, s * 16, h0.dim), LoadSegment(odd, s * 16, h0.dim)));
          _mm512_storeu_si512(v_tiles + (s * l.key_tiles + t) * kTileElements + r * kBlock,
                              pairs);
        }
      }
    }
  }
}

// c = a·b on one 2 x 2 block of tiles: a0 and a1 are A's two row strips,
// b0 and b1 B's two column strips, each `steps` consecutive tiles along k;
// c's 32 x 32 fp32 result has rows c_row_floats apart.
void MultiplyBlock(const uint16_t* a0, const uint16_t* a1, const uint16_t* b0,
                   const uint16_t* b1, int64_t steps, float* c, int64_t c_row_floats) {
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t offset = t * kTileElements;
    _tile_loadd(0, a0 + offset, 64);
    _tile_loadd(1, a1 + offset, 64);
    _tile_loadd(2, b0 + offset, 64);
    _tile_loadd(3, b1 + offset, 64);
    MultiplyBf16Block();
  }
  const int64_t stride = c_row_floats * static_cast<int64_t>(sizeof(float));
  _tile_stored(4, c, stride);
  _tile_stored(5, c + 16, stride);
  _tile_stored(6, c + 16 * c_row_floats, stride);
  _tile_stored(7, c + 16 * c_row_floats + 16, stride);
}

// scores[r, j] = (q * scale)[q_block * 32 + r]·k[j] for the block's 32 rows
// and every (padded) key.
void ScoreTiles(const Bf16Layout& l, const uint16_t* q_tiles, const uint16_t* k_tiles,
                int64_t q_block, float* scores) {
  const int64_t strip = l.dim_tiles * kTileElements;
  const uint16_t* q0 = q_tiles + 2 * q_block * strip;
  for (int64_t j0 = 0; j0 < l.keys_padded; j0 += kBlock) {
    const uint16_t* k0 = k_tiles + (j0 / 16) * strip;
    MultiplyBlock(q0, q0 + strip, k0, k0 + strip, l.dim_tiles, scores + j0, l.keys_padded);
  }
}

// The block's score rows (queries [i0, i0 + 32)) plus the mask -> softmax,
// as SoftmaxRow, written as bf16 A tiles; rows past the queries as zeros.
void SoftmaxToTiles(const AttentionHead& h, const Bf16Layout& l, int64_t i0, float* scores,
                    uint16_t* p_tiles) {
  const __m512 minus_infinity = _mm512_set1_ps(-__builtin_inff());
  for (int64_t r = 0; r < kBlock; ++r) {
    const int64_t i = i0 + r;
    uint16_t* p_row = p_tiles + (r / 16) * l.key_tiles * kTileElements + (r % 16) * kBlock;
    if (i >= h.queries) {
      for (int64_t t = 0; t < l.key_tiles; ++t) {
        _mm512_storeu_si512(p_row + t * kTileElements, _mm512_setzero_si512());
      }
      continue;
    }
    float* row = scores + r * l.keys_padded;
    const float* mask = h.mask != nullptr ? h.mask + i * h.mask_stride : nullptr;
    __m512 max = minus_infinity;
    for (int64_t j = 0; j < l.keys_padded; j += 16) {
      const __mmask16 keys = FirstLanes(h.keys - j);
      __m512 x = _mm512_loadu_ps(row + j);
      if (mask != nullptr) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(keys, mask + j));
      _mm512_storeu_ps(row + j, x);
      max = _mm512_mask_max_ps(max, keys, max, x);
    }
    const __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < l.keys_padded; j += 16) {
      const __m512 x = _mm512_loadu_ps(row + j);
      // Keys past the real ones and -inf scores (masked keys) give exactly 0.
      const __mmask16 live =
          FirstLanes(h.keys - j) & _mm512_cmp_ps_mask(x, minus_infinity, _CMP_NEQ_UQ);
      const __m512 e = _mm512_maskz_mov_ps(live, Exp(_mm512_sub_ps(x, row_max)));
      sum = _mm512_add_ps(sum, e);
      _mm512_storeu_ps(row + j, e);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int64_t t = 0; t < l.key_tiles; ++t) {
      const float* e = row + t * kBlock;
      _mm512_storeu_si512(p_row + t * kTileElements,
                          ToBf16(_mm512_mul_ps(_mm512_loadu_ps(e), inverse),
                                 _mm512_mul_ps(_mm512_loadu_ps(e + 16), inverse)));
    }
  }
}

// out[i0 + r, :] = p[r]·v for the block's real rows, 32 dimensions at a time
// through `block_out` [32, 32].
void WeightedValueTiles(const AttentionHead& h, const Bf16Layout& l, int64_t i0,
                        const uint16_t* p_tiles, const uint16_t* v_tiles, float* block_out) {
  const int64_t strip = l.key_tiles * kTileElements;
  const int64_t rows = h.queries - i0 < kBlock ? h.queries - i0 : kBlock;
  for (int64_t d0 = 0; d0 < l.dim_padded; d0 += kBlock) {
    const uint16_t* v0 = v_tiles + (d0 / 16) * strip;
    MultiplyBlock(p_tiles, p_tiles + strip, v0, v0 + strip, l.key_tiles, block_out, kBlock);
    const __mmask16 low = FirstLanes(h.dim - d0), high = FirstLanes(h.dim - d0 - 16);
    for (int64_t r = 0; r < rows; ++r) {
      float* out = h.out + (i0 + r) * h.out_stride + d0;
      _mm512_mask_storeu_ps(out, low, _mm512_loadu_ps(block_out + r * kBlock));
      _mm512_mask_storeu_ps(out + 16, high, _mm512_loadu_ps(block_out + r * kBlock + 16));
    }
  }
}

}  // namespace

int64_t AttentionScratchFloats(int64_t queries, int64_t keys, int64_t dim) {
  return (dim + queries) * RoundUpTo16(keys);
}

void AttendHeads(const AttentionHeads& g, float* scratch) {
  for (int64_t h = 0; h < g.count; ++h) AttendHead(HeadOf(g, h), scratch);
}

int64_t Bf16AttentionScratchBytes(int64_t heads, int64_t queries, int64_t keys, int64_t dim) {
  return Bf16Layout(queries, keys, dim).Bytes(heads);
}

void AttendHeadsBf16(const AttentionHeads& g, void* scratch) {
  const AttentionHead& h0 = g.first;
  const Bf16Layout l(h0.queries, h0.keys, h0.dim);
  auto* tiles = static_cast<uint16_t*>(scratch);
  uint16_t* p_tiles = tiles + g.count * l.HeadElements();
  float* scores = reinterpret_cast<float*>(p_tiles + l.PElements());
  float* block_out = scores + l.ScoreFloats();
  PackQueries(g, l, tiles);
  PackKeys(g, l, tiles);
  PackValues(g, l, tiles);
  LoadTileConfig();
  for (int64_t h = 0; h < g.count; ++h) {
    const AttentionHead head = HeadOf(g, h);
    const uint16_t* q_tiles = tiles + h * l.HeadElements();
    const uint16_t* k_tiles = q_tiles + l.QElements();
    const uint16_t* v_tiles = k_tiles + l.KElements();
    for (int64_t i0 = 0; i0 < head.queries; i0 += kBlock) {
      ScoreTiles(l, q_tiles, k_tiles, i0 / kBlock, scores);
      SoftmaxToTiles(head, l, i0, scores, p_tiles);
      WeightedValueTiles(head, l, i0, p_tiles, v_tiles, block_out);
    }
  }
  _tile_release();
}

}  // namespace oclip::amx_internal
