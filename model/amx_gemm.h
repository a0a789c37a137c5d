// The inner loops of model/amx_linear.h that need AMX and AVX-512, in their
// own translation unit (amx_gemm.cc): only it is compiled with -mamx-tile
// -mamx-int8 -mamx-bf16 -mavx512f -mavx512bw -mavx512vl -mavx512bf16, and it
// includes no LibTorch or standard-library template header, so no inline
// function compiled with those instructions can be picked by the linker for
// code that runs on other CPUs. Plain pointers and sizes only; call the int8
// functions only where AmxInt8Available() and the bf16x3 ones only where
// AmxBf16Available() (model/amx_linear.h) said yes.
//
// int8 layouts (all sizes in elements of the buffer's type):
//   A (activations, uint8): 1 KiB tiles of 16 rows x 64 bytes, row block by row
//     block: row m (counted from the buffer's first row), column k lives at
//       a[((m / 16) * k_tiles + k / 64) * 1024 + (m % 16) * 64 + k % 64]
//   B (weights, int8): AMX's VNNI form, 1 KiB tiles of 16 columns x 64 k:
//     output column n, input k lives at
//       b[((n / 16) * k_tiles + k / 64) * 1024 + ((k % 64) / 4) * 64 + (n % 16) * 4 + k % 4]
//   with k_tiles = k_padded / 64. Padding (rows past m, k past k, columns past
//   n) is zero.
//
// bf16x3 layouts (uint16 elements holding bfloat16 bits): every fp32 value v
// is held as two bfloat16, hi = bf16(v) and lo = bf16(v - hi) (both rounded
// to nearest even), and each strip of 16 rows (A) or 16 columns (B) holds its
// k_tiles hi tiles, then its k_tiles lo tiles (k_tiles = k_padded / 32):
//   A: 1 KiB tiles of 16 rows x 32 k: row m, column k's hi at
//       a[((m / 16) * 2 * k_tiles + k / 32) * 512 + (m % 16) * 32 + k % 32]
//     and its lo k_tiles * 512 further.
//   B: AMX's VNNI form for bf16, 16 columns x 32 k, pairs of k together:
//       b[((n / 16) * 2 * k_tiles + k / 32) * 512 + ((k % 32) / 2) * 32 + (n % 16) * 2 + k % 2]
//     and its lo k_tiles * 512 further.
//   Padding is zero.

#ifndef OCLIP_MODEL_AMX_GEMM_H_
#define OCLIP_MODEL_AMX_GEMM_H_

#include <cstdint>

namespace oclip::amx_internal {

// int8: rows a tile holds, bytes of K a tile step covers, the output block of four
// accumulator tiles, and the rows of A that AmxGemm keeps in L2 while it walks
// the weight panels (the caller quantizes that many rows, then multiplies them).
inline constexpr int64_t kTileRows = 16;
inline constexpr int64_t kTileK = 64;
inline constexpr int64_t kTileBytes = 1024;
inline constexpr int64_t kBlockRows = 32;  // 2 A tiles
inline constexpr int64_t kBlockCols = 32;  // 2 B tiles
inline constexpr int64_t kItemRows = 256;  // kBlockRows multiple

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

// Every function here that writes or reads A takes the tiles of rows
// [row_begin, row_end) only (row_begin a multiple of 16): row m is in A's
// row strip (m - row_begin) / 16, so that a thread can prepare and multiply a
// few rows at a time in a buffer that stays in its L2.
//
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
//   kRelu       max(v, 0), NaN kept             (as torch::relu)
enum class EpilogueActivation : int32_t { kNone = 0, kGelu = 1, kQuickGelu = 2, kRelu = 3 };

// What either GEMM writes, and where: out[i, j] for i < m, j < n.
struct GemmOutput {
  const float* bias = nullptr;  // [n] or null
  float* out = nullptr;         // [m, n] row-major
  EpilogueActivation activation = EpilogueActivation::kNone;
  const float* residual = nullptr;  // [m, n] row-major; or null
  // Where the residual is added: false, after the activation (the
  // transformer's x + mlp(x)); true, before it (the ResNet's
  // relu(conv(x) + identity)).
  bool activation_after_residual = false;
  int64_t m = 0, n = 0, k_padded = 0;
  int64_t m_padded = 0;  // multiple of kBlockRows
  int64_t n_padded = 0;  // multiple of kBlockCols
};

struct GemmArgs : GemmOutput {
  const uint8_t* a = nullptr;            // the rows' [rows / 16][k_tiles] tiles
  const float* row_scales = nullptr;     // [m]
  const int32_t* zero_points = nullptr;  // [m]
  const int8_t* b = nullptr;             // [n_padded / 16][k_tiles] tiles
  const float* column_scales = nullptr;  // [n_padded]
  const int32_t* column_sums = nullptr;  // [n_padded]: sum over k of b's column
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
// or activation(v + residual[m, n]) where activation_after_residual (one
// fp32 write per element: the activation and residual cost no extra pass).
void AmxGemm(const GemmArgs& args, int64_t row_begin, int64_t row_end, int64_t col_block_begin,
             int64_t col_block_end);

// bf16x3: the k a bf16 tile step covers, and the rows of A that
// AmxBf16x3Gemm keeps in L2 while it walks the weight panels (A takes 4 bytes
// per element here, against int8's 1).
inline constexpr int64_t kBf16TileK = 32;
inline constexpr int64_t kBf16ItemRows = 128;  // kBlockRows multiple

// Writes rows [row_begin, row_end) of x (fp32, row-major [*, k]), or of
// LayerNorm(x) where `norm` is given, into A as hi and lo bfloat16 tiles (see
// the layout above; k padding zeroed). Rows at or past `rows` are zeros.
void SplitRowsToBf16Tiles(const float* x, int64_t rows, int64_t k, int64_t k_padded,
                          int64_t row_begin, int64_t row_end, uint16_t* a,
                          const RowLayerNorm* norm = nullptr);

// The 3x3 convolution (stride 1, padding 1) of channels-last x [batch,
// height, width, channels] as a GEMM: row m = (image, y, x) holds the 3x3
// patch around that pixel, k = (dy * 3 + dx) * channels_padded + c with
// channels_padded = channels rounded up to 32; zeros outside the image, past
// `channels` and in rows past batch * height * width. Writes rows
// [row_begin, row_end) into A as SplitRowsToBf16Tiles does
// (k_padded = 9 * channels_padded).
void SplitPatchRowsToBf16Tiles(const float* x, int64_t batch, int64_t height, int64_t width,
                               int64_t channels, int64_t row_begin, int64_t row_end, uint16_t* a);

struct Bf16x3GemmArgs : GemmOutput {
  const uint16_t* a = nullptr;  // the rows' [rows / 16][2 * k_tiles] tiles
  const uint16_t* b = nullptr;  // [n_padded / 16][2 * k_tiles] tiles
};

// AmxGemm's bf16x3 twin: for every output element of the rows and column
// blocks given,
//   acc = sum_k (a_hi b_hi + a_lo b_hi + a_hi b_lo)[m, n, k]   (fp32 accumulation)
//   out[m, n] = activation(acc + bias[n] or 0) + (residual[m, n] or 0)
// (the residual first where activation_after_residual, as AmxGemm).
// The dropped a_lo b_lo term and the bits below lo are ~2^-16 of each
// product: an fp32 GEMM to within a few 1e-6 relative, at three bf16 tile
// products per step.
void AmxBf16x3Gemm(const Bf16x3GemmArgs& args, int64_t row_begin, int64_t row_end,
                   int64_t col_block_begin, int64_t col_block_end);

// The epilogue's AVX-512 elementwise functions on count floats (x and y may
// be the same array), exposed so that tests can check them against std:: in
// double over dense grids:
//   VectorExp      exp(x): Cody-Waite range reduction, Cephes' degree-6
//                  polynomial, 2^n by scalef (overflow to inf, underflow
//                  through the subnormals to 0); within 2 ulp.
//   VectorSigmoid  1 / (1 + exp(-x)), as exp(x) / (1 + exp(x)) for x < 0 so
//                  that tiny results keep their precision; within a few ulp.
//   VectorErf      a rational fit x P(x^2) / Q(x^2) on [-4, 4], +-1 beyond,
//                  odd in x; within 1e-6 absolute (the fit's own error is
//                  6e-8).
void VectorExp(const float* x, float* y, int64_t count);
void VectorSigmoid(const float* x, float* y, int64_t count);
void VectorErf(const float* x, float* y, int64_t count);

}  // namespace oclip::amx_internal

#endif  // OCLIP_MODEL_AMX_GEMM_H_
