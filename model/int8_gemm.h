// A dynamically quantized int8 Linear, y = x·Wᵀ + b, on AMX-INT8 tiles: the
// CPU `--precision int8` kernel where the CPU has AMX (model/
// inference_precision.cc keeps oneDNN's dynamic int8 Linear elsewhere).
//
// Why not LibTorch's quantized::linear_dynamic: Debian's LibTorch 1.13 runs it
// on oneDNN's old gemm_s8u8s32 (no fbgemm), a third of its time in a scalar
// zero-point loop and elementwise quantize/dequantize ops around it; one AMX
// TDPBUSD does a 16x16x64 u8·s8 block.
//
//   weights      once (PackInt8Weight): per output channel, symmetric int8,
//                scale = max|w[n, :]| / 127 (at least 1e-8), q = nearbyint(w / scale)
//                in [-127, 127], packed into AMX's VNNI B-tile layout with
//                padding to 32 columns and 64 k, and the column sums of q.
//   activations  per call, per row (token), asymmetric uint8 over [min(0, x),
//                max(0, x)] (model/int8_gemm_amx.h QuantizeRowsToTiles), written
//                straight into the A-tile layout with AVX-512.
//   GEMM         exact int32 accumulation on 2 x 2 tiles per 32 x 32 block,
//                then y = fma(float(acc - zero_point[m] * colsum[n]),
//                row_scale[m] * weight_scale[n], b[n]) in fp32, optionally
//                GELU / QuickGELU and a residual added in the same write
//                (Int8Epilogue: the MLP's activation and the transformer
//                block's residual adds cost no pass of their own), split over
//                LibTorch's intra-op threads (at::parallel_for; int8_gemm.cc is
//                compiled with OpenMP for that, see model/CMakeLists.txt).
//
// Per-row activation scales are finer than PyTorch's per-tensor ones, so the
// features stay closer to fp32.

#ifndef OCLIP_MODEL_INT8_GEMM_H_
#define OCLIP_MODEL_INT8_GEMM_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "model/int8_gemm_amx.h"

namespace oclip {

// True when this process may run the AMX kernel: CPUID reports AMX-TILE,
// AMX-INT8 and AVX-512 F/BW/VL, the OS has enabled their register state
// (XCR0), and Linux granted the process the AMX tile data state
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); asked once, on the
// first call). Thread-safe.
bool AmxInt8Available();

// A weight [N, K] quantized and packed once (model/int8_gemm_amx.h gives the
// byte layout). Immutable; shared by concurrent calls.
struct Int8PackedWeight {
  int64_t out_features = 0;   // N
  int64_t in_features = 0;    // K
  int64_t padded_out = 0;     // N rounded up to 32
  int64_t padded_in = 0;      // K rounded up to 64
  at::Tensor packed;       // int8 [padded_out * padded_in], VNNI B tiles
  at::Tensor scales;       // float [padded_out]; 1 in the padding
  at::Tensor column_sums;  // int32 [padded_out]: sum over k of q[n, k]
};

// Quantizes and packs `weight` (any float dtype, [N, K], N and K > 0). Runs
// anywhere (no AMX needed).
Int8PackedWeight PackInt8Weight(const at::Tensor& weight);

// What AmxInt8Linear may fold into its one fp32 write of y (the "epilogue"):
// an activation of y, then a residual added: out = residual + activation(y).
//   kGelu       exact (erf) GELU, as torch::gelu / nn.GELU()
//   kQuickGelu  y * sigmoid(1.702 y), OpenAI CLIP's QuickGELU
// Both within ~1e-6 of the exact functions (int8_gemm_amx.h's VectorErf and
// VectorSigmoid), far below the int8 quantization error. The kernel's own
// enum, so that it passes through unconverted.
using Int8Activation = int8_gemm_internal::EpilogueActivation;
struct Int8Epilogue {
  Int8Activation activation = Int8Activation::kNone;
  at::Tensor residual;  // the output's shape [..., N], any float dtype; or undefined
};

// A LayerNorm over x's last dimension (torch::layer_norm with this weight,
// bias and eps, both [K]) that AmxInt8Linear may apply to x first, fused into
// its per-row quantization: the normalized fp32 x is never written. An
// undefined weight means none.
struct Int8InputLayerNorm {
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
                         const at::Tensor& bias, const Int8Epilogue& epilogue = {},
                         const Int8InputLayerNorm& input_norm = {});

}  // namespace oclip

#endif  // OCLIP_MODEL_INT8_GEMM_H_
