// Linear layers, y = x·Wᵀ + b, on AMX tiles: the CPU kernels of `--precision
// int8` and, where the CPU has AMX-BF16, of `--precision fp32`
// (model/inference_precision.cc picks them; elsewhere it keeps LibTorch's).
//
// int8 (AmxInt8Linear), dynamically quantized. Why not LibTorch's
// quantized::linear_dynamic: Debian's LibTorch 1.13 runs it on oneDNN's old
// gemm_s8u8s32 (no fbgemm), a third of its time in a scalar zero-point loop
// and elementwise quantize/dequantize ops around it; one AMX TDPBUSD does a
// 16x16x64 u8·s8 block.
//   weights      once (PackInt8Weight): per output channel, symmetric int8,
//                scale = max|w[n, :]| / 127 (at least 1e-8), q = nearbyint(w / scale)
//                in [-127, 127], packed into AMX's VNNI B-tile layout with
//                padding to 32 columns and 64 k, and the column sums of q.
//   activations  per call, per row (token), asymmetric uint8 over [min(0, x),
//                max(0, x)] (model/amx_gemm.h QuantizeRowsToTiles), written
//                straight into the A-tile layout with AVX-512.
//   GEMM         exact int32 accumulation on 2 x 2 tiles per 32 x 32 block,
//                then y = fma(float(acc - zero_point[m] * colsum[n]),
//                row_scale[m] * weight_scale[n], b[n]) in fp32.
// Per-row activation scales are finer than PyTorch's per-tensor ones, so the
// features stay closer to fp32.
//
// fp32 as bf16x3 (AmxBf16x3Linear): each fp32 operand is split into two
// bfloat16, v = hi + lo with the bits below lo dropped (~2^-17 of v), and
// x·w = x_hi·w_hi + x_lo·w_hi + x_hi·w_lo on AMX-BF16 tiles with fp32
// accumulation; the dropped x_lo·w_lo is ~2^-16 of the product. This is what
// PyTorch calls float32 matmul precision "high" (torch.set_float32_matmul_
// precision): a few 1e-6 relative per GEMM, where the fp32 peak of two
// AVX-512 FMA units is 3-6x below three AMX products. Weights are split and
// packed once (PackBf16x3Weight), activations per call.
//
// Both fold into their one fp32 write of y the MLP's GELU / QuickGELU and the
// transformer block's residual add (AmxEpilogue), and into their reading of x
// the block's LayerNorm (AmxInputLayerNorm), and split the rows (or, for a
// small batch, the columns) over LibTorch's intra-op threads (at::parallel_for;
// amx_linear.cc is compiled with OpenMP for that, see model/CMakeLists.txt).

#ifndef OCLIP_MODEL_AMX_LINEAR_H_
#define OCLIP_MODEL_AMX_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "model/amx_gemm.h"

namespace oclip {

// True when this process may run the int8 (bf16x3) kernel: CPUID reports
// AMX-TILE, AMX-INT8 (AMX-BF16 and AVX512-BF16) and AVX-512 F/BW/VL, the OS
// has enabled their register state (XCR0), and Linux granted the process the
// AMX tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
// asked once, on the first call). Thread-safe.
bool AmxInt8Available();
bool AmxBf16Available();
// True when this process may run the AVX-512 (F/BW/VL) kernels that need no
// AMX (model/cpu_attention.h): CPUID and XCR0 only.
bool Avx512Available();

// A weight [N, K] quantized and packed once (model/amx_gemm.h gives the
// byte layout). Immutable; shared by concurrent calls.
struct Int8PackedWeight {
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  int64_t padded_out = 0;    // N rounded up to 32
  int64_t padded_in = 0;     // K rounded up to 64
  at::Tensor packed;         // int8 [padded_out * padded_in], VNNI B tiles
  at::Tensor scales;         // float [padded_out]; 1 in the padding
  at::Tensor column_sums;    // int32 [padded_out]: sum over k of q[n, k]
};

// Quantizes and packs `weight` (any float dtype, [N, K], N and K > 0). Runs
// anywhere (no AMX needed).
Int8PackedWeight PackInt8Weight(const at::Tensor& weight);

// What AmxInt8Linear and AmxBf16x3Linear may fold into their one fp32 write
// of y (the "epilogue"): an activation of y and a residual added,
// out = residual + activation(y), or out = activation(y + residual) where
// activation_after_residual.
//   kGelu       exact (erf) GELU, as torch::gelu / nn.GELU()
//   kQuickGelu  y * sigmoid(1.702 y), OpenAI CLIP's QuickGELU
//   kRelu       max(y, 0), as torch::relu (exact)
// GELU and QuickGELU within ~1e-6 of the exact functions (amx_gemm.h's
// VectorErf and VectorSigmoid), far below the int8 quantization error and
// within OpenCLIP parity for fp32. The kernel's own enum, so that it passes
// through unconverted.
using AmxActivation = amx_internal::EpilogueActivation;
struct AmxEpilogue {
  AmxActivation activation = AmxActivation::kNone;
  at::Tensor residual;  // the output's shape [..., N], any float dtype; or undefined
  // false: the transformer's x + mlp(x); true: the ResNet's relu(conv(x) + identity).
  bool activation_after_residual = false;
};

// A LayerNorm over x's last dimension (torch::layer_norm with this weight,
// bias and eps, both [K]) that AmxInt8Linear and AmxBf16x3Linear may apply
// to x first, fused into their per-row quantization or split: the normalized
// fp32 x is never written. An undefined weight means none.
struct AmxInputLayerNorm {
  at::Tensor weight;
  at::Tensor bias;
  double eps = 1e-5;
};

// y = LayerNorm(x) (where input_norm has a weight) ·Wᵀ + b for x [..., K]
// (any float dtype; fp32 inside), bias [N] or undefined, then the epilogue;
// returns [..., N] in x's dtype. Needs AmxInt8Available(); throws c10::Error
// (TORCH_CHECK) on shape mismatches (the residual's and the LayerNorm's
// included) or without AMX.
at::Tensor AmxInt8Linear(const at::Tensor& x, const Int8PackedWeight& weight,
                         const at::Tensor& bias, const AmxEpilogue& epilogue = {},
                         const AmxInputLayerNorm& input_norm = {});

// A weight [N, K] split into hi and lo bfloat16 and packed once
// (model/amx_gemm.h gives the layout). Immutable; shared by concurrent calls.
struct Bf16x3PackedWeight {
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  int64_t padded_out = 0;    // N rounded up to 32
  int64_t padded_in = 0;     // K rounded up to 32
  at::Tensor packed;         // int16 [padded_out * padded_in * 2]: bfloat16 bits
};

// Splits and packs `weight` (any float dtype, [N, K], N and K > 0). Runs
// anywhere (no AMX needed).
Bf16x3PackedWeight PackBf16x3Weight(const at::Tensor& weight);

// AmxInt8Linear's contract, in bf16x3 (see the top of this file): y within a
// few 1e-6 of the fp32 Linear, relative to the output's scale. Needs
// AmxBf16Available().
at::Tensor AmxBf16x3Linear(const at::Tensor& x, const Bf16x3PackedWeight& weight,
                           const at::Tensor& bias, const AmxEpilogue& epilogue = {},
                           const AmxInputLayerNorm& input_norm = {});

// A 3x3 convolution with stride 1 and padding 1 as a bf16x3 GEMM over the
// pixels' 3x3 patches ("implicit GEMM": the patches are gathered while the
// activations are split, never stored as fp32). PackBf16x3Conv3x3Weight packs
// a weight [out, C, 3, 3] as the Linear [out, 9 * C'] over those patches (C'
// = C rounded up to 32, zero-padded); AmxBf16x3Conv3x3 takes x [N, C, H, W]
// (channels-last in memory avoids a copy) and bias [out] or undefined, and
// returns [N, out, H, W], channels-last, fp32, within a few 1e-6 of the fp32
// convolution, with the epilogue applied as AmxBf16x3Linear does (its
// residual [N, out, H, W], any memory format). Needs AmxBf16Available();
// throws c10::Error on shape mismatches.
Bf16x3PackedWeight PackBf16x3Conv3x3Weight(const at::Tensor& weight);
at::Tensor AmxBf16x3Conv3x3(const at::Tensor& x, const Bf16x3PackedWeight& weight,
                            const at::Tensor& bias, const AmxEpilogue& epilogue = {});

}  // namespace oclip

#endif  // OCLIP_MODEL_AMX_LINEAR_H_
