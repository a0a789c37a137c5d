// Scaled dot-product attention for inference on the CPU on fp32 tensors, one
// kernel per head (model/attention_kernel.h: fp32 with AVX-512, or bf16 on
// AMX tiles), the heads spread over LibTorch's intra-op threads.
//
// Why: LibTorch 1.13 has no fused attention, and its composition
// (matmul, softmax, matmul) runs each head's two small GEMMs as separate BLAS
// calls. On a CPU that Debian's OpenBLAS 0.3.21 does not recognize (Emerald
// Rapids, for one: it falls back to its SSE3 "Prescott" kernels, and its
// own threads spin beside LibTorch's), that took 40% of ViT-B-32's fp32
// time for 1% of its FLOPs.

#ifndef OCLIP_MODEL_CPU_ATTENTION_H_
#define OCLIP_MODEL_CPU_ATTENTION_H_

#include <ATen/core/Tensor.h>

namespace oclip {

// What the heads' two products (q·kᵀ and p·v) compute in.
enum class AttentionPrecision {
  // fp32 throughout (AVX-512): within 1e-6 of the composition. What fp32
  // inference uses.
  kFp32,
  // q, k, the probabilities and v rounded to bfloat16, fp32 accumulation on
  // AMX-BF16 tiles (fp32 softmax and output), where AmxBf16Available(); fp32
  // elsewhere. For the bf16 and int8 precisions, whose Linears already round
  // their operands as coarsely: on ViT-B-32 with int8 Linears the attention
  // took ~15% of the time in fp32, which is 1% of the FLOPs.
  kBf16,
};

// True when CpuAttention takes these arguments: under InferenceMode (as the
// prepared kernels of model/inference_precision.h: training keeps LibTorch's
// composition, so that gradient checkpointing's no-grad forward and its
// recomputation agree bit for bit), AVX-512 (Avx512Available()), q [N, H, Lq,
// D], k and v [N, H, Lk, D], all fp32 on the CPU, and `mask` undefined or an
// fp32 additive mask broadcastable to [N, H, Lq, Lk].
bool CpuAttentionApplies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& mask);

// The kernel CpuAttention runs for `precision` on this CPU: "amx_bf16",
// "avx512_fp32", or "aten_matmul_softmax_fp32" where it never applies (no
// AVX-512) and LibTorch's composition runs. For logs and benchmarks.
const char* CpuAttentionKernel(AttentionPrecision precision);

// softmax(q·kᵀ/sqrt(D) + mask)·v, [N, H, Lq, D] (a view whose memory is [N,
// Lq, H, D], so that merging the heads back costs no copy), in `precision`.
// Needs CpuAttentionApplies(); throws c10::Error otherwise.
at::Tensor CpuAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& mask,
                        AttentionPrecision precision = AttentionPrecision::kFp32);

}  // namespace oclip

#endif  // OCLIP_MODEL_CPU_ATTENTION_H_
