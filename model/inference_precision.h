// What each precision (model/precision.h) means on a device, and for the CPU
// the one-time preparation of a loaded model for it. On a CUDA device the
// weights and activations are simply cast (fp32, fp16, bf16). On the CPU the
// model keeps its fp32 weights and the precision is a set of prepared kernels:
// weights are converted once into the form the fast kernels want (oneDNN/bf16
// copies, int8 packed matrices, BatchNorm folded into the convolution before
// it) and installed as layers.h PackedKernels, which the forward passes use
// under InferenceMode only.
//
//   fp32  within 1e-4 of OpenCLIP: BatchNorm folded into the ResNet
//         convolutions, channels-last convolution weights, the ViT patch
//         embedding as one GEMM over the unfolded patches. Where the CPU has
//         AMX-BF16, every Linear, the packed in_proj and the patch embedding
//         run as bf16x3 (model/amx_linear.h: each fp32 operand the sum of two
//         bfloat16, three AMX products, fp32 accumulation; PyTorch's float32
//         matmul precision "high"), a few 1e-6 from fp32 GEMMs and 2x their
//         speed, with the transformers' LayerNorm, GELU and residual adds fused
//         into them. OCLIP_FP32_MATMUL_PRECISION=highest keeps LibTorch's fp32
//         GEMMs instead (as it does on other CPUs). The ResNet's 1x1 and
//         stride-1 3x3 convolutions run as such GEMMs over the pixels (and
//         their 3x3 patches) there too, with their ReLU and the bottleneck's
//         residual add fused in. The split copies take as much memory
//         as the fp32 weights they come from, which the model keeps (as bf16
//         and int8 keep theirs): "highest" prepares no copy.
//   bf16  every Linear, the attention's packed in_proj and every convolution in
//         bfloat16 (oneDNN, convolution weights reordered once and the ReLU
//         that follows folded in; AMX where the CPU has it), fp32 in between
//         (LayerNorm, softmax, residuals) except in the ResNet, whose
//         activations stay bf16 from convolution to convolution (its ReLU and
//         residual adds one AVX-512 pass, model/bf16_relu.h): feature cosine
//         >= 0.999 to fp32.
//         Where the CPU has AMX-BF16, the transformer blocks' attention
//         products (q·kᵀ, p·v) run in bf16 on its tiles too
//         (model/cpu_attention.h), as they do for int8.
//   int8  dynamic quantization of every Linear, the packed in_proj and the ViT
//         patch embedding: int8 weights (per output channel, symmetric), int8
//         activations quantized per call, fp32 out. Where the CPU has AMX-INT8
//         (model/amx_linear.h): activations per row, the GEMM on AMX tiles;
//         elsewhere PyTorch's quantized::linear_dynamic (activations per
//         tensor) on the quantized engine this LibTorch has: oneDNN, or fbgemm
//         where built. LibTorch 1.13 has no dynamic int8 convolution, so the
//         ResNet's convolutions run in bf16 where the CPU has AMX (its AMX-BF16
//         tiles make that the fastest kernel there) and stay fp32 elsewhere.
//         The attention's products run in bf16 as for bf16.
//   fp16  CUDA only: the CPU has no fast fp16 GEMM. (int8 is CPU only.)
//
// Contract: call PrepareForInference once, after the weights are loaded, on a
// model in eval mode on the CPU in fp32, before serving it; it mutates the
// modules (not thread-safe), and afterwards concurrent forwards under
// InferenceMode are safe. Training (autograd on) ignores the prepared kernels;
// the prepared weights are copies, so loading new weights afterwards needs a
// new PrepareForInference call.

#ifndef OCLIP_MODEL_INFERENCE_PRECISION_H_
#define OCLIP_MODEL_INFERENCE_PRECISION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/clip_model.h"
#include "model/precision.h"

namespace oclip {

// The environment variable that chooses fp32's GEMMs on AMX-BF16 CPUs:
// "high" (or unset) for bf16x3, "highest" for LibTorch's fp32 GEMMs.
inline constexpr char kFp32MatmulPrecisionVariable[] = "OCLIP_FP32_MATMUL_PRECISION";

// FAILED_PRECONDITION, saying what to use instead, where `device` cannot run
// `precision` (fp16 on the CPU, int8 on CUDA). Cheap: check before loading.
absl::Status CheckPrecisionOnDevice(InferencePrecision precision, const torch::Device& device);

// The dtype a model's weights are cast to on a CUDA device.
torch::ScalarType CudaWeightType(InferencePrecision precision);

// What PrepareForInference installed, for benchmarks and logs.
struct PreparedKernels {
  InferencePrecision precision = InferencePrecision::kFp32;
  std::string linear_kernel;  // e.g. "aten_linear_fp32", "amx_int8_per_row_dynamic"
  std::string conv_kernel;    // e.g. "conv2d_fp32_channels_last_bn_folded",
                              // "patch_embedding_as_amx_int8_per_row_dynamic"
  std::string attention_kernel;  // the transformer blocks' attention: "avx512_fp32",
                                 // "amx_bf16", "aten_matmul_softmax_fp32"; or empty
  int64_t linears = 0;        // Linear layers and packed in_proj given a kernel
  int64_t convolutions = 0;   // convolutions given a kernel (patch embedding included)
  int64_t folded_batch_norms = 0;
};

// FAILED_PRECONDITION if the model is not on the CPU, not fp32, in training
// mode, the precision is fp16, or the int8 path is asked for on a LibTorch
// without a quantized engine; INVALID_ARGUMENT if OCLIP_FP32_MATMUL_PRECISION
// is neither high nor highest; INTERNAL if LibTorch fails while converting.
absl::StatusOr<PreparedKernels> PrepareForInference(ClipModel& model,
                                                    InferencePrecision precision);

}  // namespace oclip

#endif  // OCLIP_MODEL_INFERENCE_PRECISION_H_
