// The two inner loops of model/int8_gemm.h that need AMX and AVX-512, in their
// own translation unit (int8_gemm_amx.cc): only it is compiled with
// -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512vl, and it includes no
// LibTorch or standard-library template header, so no inline function
// compiled with those instructions can be picked by the linker for code that
// runs on other CPUs. Plain pointers and sizes only; call these only where
// AmxInt8Available() (model/int8_gemm.h) said yes.
//
// Layouts (all sizes in elements of the buffer's type):
//   A (activations, uint8): 1 KiB tiles of 16 rows x 64 bytes, row block by row
//     block: row m, column k lives at
//       a[((m / 16) * k_tiles + k / 64) * 1024 + (m % 16) * 64 + k % 64]
//   B (weights, int8): AMX's VNNI form, 1 KiB tiles of 16 columns x 64 k:
//     output column n, input k lives at
//       b[((n / 16) * k_tiles + k / 64) * 1024 + ((k % 64) / 4) * 64 + (n % 16) * 4 + k % 4]
//   with k_tiles = k_padded / 64. Padding (rows past m, k past k, columns past
//   n) is zero.

#ifndef OCLIP_MODEL_INT8_GEMM_AMX_H_
#define OCLIP_MODEL_INT8_GEMM_AMX_H_

#include <cstdint>

namespace oclip::int8_gemm_internal {

// Rows a tile holds, bytes of K a tile step covers, the output block of four
// accumulator tiles, and the rows of A that AmxGemm keeps in L2 while it walks
// the weight panels (the caller quantizes that many rows, then multiplies them).
inline constexpr int64_t kTileRows = 16;
inline constexpr int64_t kTileK = 64;
inline constexpr int64_t kTileBytes = 1024;
inline constexpr int64_t kBlockRows = 32;   // 2 A tiles
inline constexpr int64_t kBlockCols = 32;   // 2 B tiles
inline constexpr int64_t kItemRows = 256;   // kBlockRows multiple

// The smallest activation scale: a row whose range is below 255 * kMinScale
// (all zeros, say) is quantized with kMinScale.
inline constexpr float kMinScale = 1e-20f;

// A LayerNorm applied to each row of x before it is quantized, as
// torch::layer_norm over the last dimension: mean and biased variance of the
// row, y = (x - mean) / sqrt(var + eps) * gamma + beta, in fp32.
struct RowLayerNorm {
  const float* gamma;  // [k]
  const float* beta;   // [k]
  float eps;
};

// Quantizes rows [row_begin, row_end) of x (fp32, row-major [*, k]), or of
// LayerNorm(x) where `norm` is given (the fp32 normalized rows are never
// stored), to uint8,
// each row with its own scale and zero point:
//   lo = min(0, min_k x), hi = max(0, max_k x),
//   scale = max((hi - lo) / 255, kMinScale), inv = 1 / scale,
//   zero_point = clamp(nearbyint(-lo * inv), 0, 255),
//   q = clamp(nearbyint(x * inv) + zero_point, 0, 255)     (round half to even)
// and writes q into A (see the layout above; its k padding is zeroed). Rows at
// or past `rows` (the real row count) are written as zeros with scale 1 and
// zero point 0.
void QuantizeRowsToTiles(const float* x, int64_t rows, int64_t k, int64_t k_padded,
                         int64_t row_begin, int64_t row_end, uint8_t* a, float* scales,
                         int32_t* zero_points, const RowLayerNorm* norm = nullptr);

// What the epilogue applies to the linear result v before it writes it:
//   kGelu       0.5 v (1 + erf(v / sqrt(2)))   (exact GELU, as torch::gelu)
//   kQuickGelu  v sigmoid(1.702 v)              (OpenAI CLIP's QuickGELU)
enum class EpilogueActivation : int32_t { kNone = 0, kGelu = 1, kQuickGelu = 2 };

struct GemmArgs {
  const uint8_t* a;              // [m_padded / 16][k_tiles] tiles
  const float* row_scales;       // [m]
  const int32_t* zero_points;    // [m]
  const int8_t* b;               // [n_padded / 16][k_tiles] tiles
  const float* column_scales;    // [n_padded]
  const int32_t* column_sums;    // [n_padded]: sum over k of b's column
  const float* bias;             // [n] or null
  float* out;                    // [m, n] row-major
  EpilogueActivation activation = EpilogueActivation::kNone;
  const float* residual = nullptr;  // [m, n] row-major, added last; or null
  int64_t m, n, k_padded;
  int64_t m_padded;              // multiple of kBlockRows
  int64_t n_padded;              // multiple of kBlockCols
};

// Computes the output rows [row_begin, row_end) (multiples of kBlockRows, up to
// m_padded; rows past m are not written) and the column blocks
// [col_block_begin, col_block_end) of kBlockCols columns, on the calling
// thread's AMX tiles (it loads the tile configuration and releases it): for
// every output element
//   acc = sum_k a[m, k] * b[n, k]                          (exact int32)
//   v = fma(float(acc - zero_point[m] * column_sum[n]),
//           row_scale[m] * column_scale[n], bias[n] or 0)
//   out[m, n] = activation(v) + (residual[m, n] or 0)
// (one fp32 write per element: the activation and residual cost no extra pass).
void AmxGemm(const GemmArgs& args, int64_t row_begin, int64_t row_end, int64_t col_block_begin,
             int64_t col_block_end);

// The epilogue's AVX-512 elementwise functions on count floats (x and y may
// be the same array), exposed so that tests can check them against std:: in
// double over dense grids:
//   VectorExp      exp(x): Cody-Waite range reduction, Cephes' degree-6
//                  polynomial, 2^n by scalef (overflow to inf, underflow
//                  through the subnormals to 0); within 2 ulp.
//   VectorSigmoid  1 / (1 + exp(-x)), as exp(x) / (1 + exp(x)) for x < 0 so
//                  that tiny results keep their precision; within a few ulp.
//   VectorErf      Abramowitz & Stegun 7.1.26 (as PyTorch's vectorized erf),
//                  odd in x; within 1e-6 absolute (the formula's own error is
//                  1.5e-7).
void VectorExp(const float* x, float* y, int64_t count);
void VectorSigmoid(const float* x, float* y, int64_t count);
void VectorErf(const float* x, float* y, int64_t count);

}  // namespace oclip::int8_gemm_internal

#endif  // OCLIP_MODEL_INT8_GEMM_AMX_H_
