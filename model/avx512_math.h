// AVX-512 and AMX building blocks shared by the kernels compiled with the
// AMX/AVX-512 flags (model/amx_gemm.cc, model/attention_kernel.cc,
// model/bf16_relu_kernel.cc). Include it
// from those translation units only: its inline functions use AVX-512 and AMX
// instructions, and a copy compiled into a portable translation unit could be
// the one the linker keeps.

#ifndef OCLIP_MODEL_AVX512_MATH_H_
#define OCLIP_MODEL_AVX512_MATH_H_

#include <immintrin.h>

#include <cstdint>

namespace oclip::avx512_math {

// Lanes [0, count) of 16, count clamped to [0, 16].
inline __mmask16 FirstLanes(int64_t count) {
  if (count >= 16) return static_cast<__mmask16>(0xFFFF);
  if (count <= 0) return 0;
  return static_cast<__mmask16>((1u << count) - 1);
}

// The fp32 values of 16 bfloat16 (a bf16 is the top half of a float).
inline __m512 Bf16ToFloat(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// 1 / d to ~1 ulp: the 14-bit estimate and one Newton step, much cheaper
// than a division. d must be finite and nonzero (callers keep d in [1, 180]).
inline __m512 Reciprocal(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);
}

// exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in two parts
// (Cody-Waite), exp(r) = 1 + r + r^2 P(r) on |r| <= ln(2) / 2 (Cephes' expf).
// Inputs are clamped to [-104, 104] first (exp is 0 / inf in float beyond),
// with the constant as the first operand so that a NaN passes through.
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(104.0f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(e, n);
}

// AMX's palette-1 tile configuration (64 bytes, loaded by _tile_loadconfig).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t bytes_per_row[16];
  uint8_t rows[16];
};

// Configures all eight tiles as 16 rows of 64 bytes: 16 x 64 int8, 16 x 32
// bf16 or 16 x 16 int32 / fp32, which is every tile the kernels use. Pair it
// with _tile_release() on the same thread.
inline void LoadTileConfig() {
  TileConfig config{};
  config.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  // GCC 12's _tile_loadconfig tells the compiler that ldtilecfg reads only
  // the first 8 bytes of the configuration, so the stores above may be
  // dropped as dead (they were, once inlined into the attention kernel: the
  // first tile instruction then faulted). This barrier makes them land.
  __asm__ volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
}

// C += A·B on a 2 x 2 block of bf16 tiles: accumulators 4-7 from A tiles 0-1
// and B tiles 2-3 (4 = A0 B0, 5 = A0 B1, 6 = A1 B0, 7 = A1 B1).
inline void MultiplyBf16Block() {
  _tile_dpbf16ps(4, 0, 2);
  _tile_dpbf16ps(5, 0, 3);
  _tile_dpbf16ps(6, 1, 2);
  _tile_dpbf16ps(7, 1, 3);
}

}  // namespace oclip::avx512_math

#endif  // OCLIP_MODEL_AVX512_MATH_H_
