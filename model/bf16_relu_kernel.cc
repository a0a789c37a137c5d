#include "model/bf16_relu_kernel.h"

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
using avx512_math::FirstLanes;

// Lanes [0, count) of 32, count clamped to [0, 32] (avx512_math::FirstLanes
// for 32 16-bit lanes).
inline __mmask32 FirstLanes32(int64_t count) {
  if (count >= 32) return 0xFFFFFFFFu;
  if (count <= 0) return 0;
  return (1u << count) - 1;
}

// 16 floats rounded to bfloat16 as LibTorch rounds (c10::BFloat16's
// round_to_nearest_even): ties to even, any NaN to the quiet NaN 0x7FC0.
// (AVX512-BF16's VCVTNEPS2BF16 keeps a NaN's sign and top payload bits.)
inline __m256i ToBf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(rounded);
}

}  // namespace

void ReluBf16InPlace(uint16_t* y, int64_t count) {
  // On the bits: a negative number has the sign bit set, and is not a NaN
  // (exponent and mantissa above 0x7F80); those become +0.
  const __m512i magnitude_mask = _mm512_set1_epi16(0x7FFF);
  const __m512i infinity = _mm512_set1_epi16(0x7F80);
  for (int64_t i = 0; i < count; i += 32) {
    const __mmask32 lanes = FirstLanes32(count - i);
    const __m512i v = _mm512_maskz_loadu_epi16(lanes, y + i);
    const __mmask32 negative = _mm512_movepi16_mask(v);
    const __mmask32 number =
        _mm512_cmple_epu16_mask(_mm512_and_si512(v, magnitude_mask), infinity);
    _mm512_mask_storeu_epi16(y + i, lanes & negative & number, _mm512_setzero_si512());
  }
}

void AddReluBf16InPlace(uint16_t* y, const uint16_t* residual, int64_t count) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 lanes = FirstLanes(count - i);
    const __m512 a = Bf16ToFloat(_mm256_maskz_loadu_epi16(lanes, y + i));
    const __m512 b = Bf16ToFloat(_mm256_maskz_loadu_epi16(lanes, residual + i));
    // MAXPS returns its second operand where either is NaN: NaN stays NaN.
    _mm256_mask_storeu_epi16(y + i, lanes, ToBf16(_mm512_max_ps(zero, _mm512_add_ps(a, b))));
  }
}

}  // namespace oclip::amx_internal
