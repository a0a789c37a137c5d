// The one place where differences between LibTorch versions are absorbed:
// Debian 12 ships LibTorch 1.13 (CPU); the GPU machine has PyTorch 2.x.

#ifndef OCLIP_MODEL_TORCH_COMPAT_H_
#define OCLIP_MODEL_TORCH_COMPAT_H_

#include <torch/torch.h>
#include <torch/version.h>

#include "model/cpu_attention.h"

namespace oclip {

#if TORCH_VERSION_MAJOR >= 2
inline constexpr bool kHasFusedAttention = true;
#else
inline constexpr bool kHasFusedAttention = false;
#endif

// softmax(q·kᵀ/sqrt(d) + mask)·v for q [N, H, Lq, D], k and v [N, H, Lk, D];
// `mask` is additive and broadcastable to [N, H, Lq, Lk], or undefined.
// `cpu_precision` is what the CPU kernel computes the products in where it
// applies (model/cpu_attention.h); elsewhere the tensors' dtype decides.
inline torch::Tensor ScaledDotProductAttention(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask, AttentionPrecision cpu_precision = AttentionPrecision::kFp32) {
#if TORCH_VERSION_MAJOR >= 2
  static_cast<void>(cpu_precision);
  return at::scaled_dot_product_attention(
      q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt);
#else
  if (CpuAttentionApplies(q, k, v, mask)) return CpuAttention(q, k, v, mask, cpu_precision);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores = torch::matmul(q * scale, k.transpose(-2, -1));
  if (mask.defined()) scores = scores + mask;
  return torch::matmul(torch::softmax(scores, -1), v);
#endif
}

}  // namespace oclip

#endif  // OCLIP_MODEL_TORCH_COMPAT_H_
