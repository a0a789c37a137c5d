#include "model/cpu_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/amx_linear.h"

#if OCLIP_HAVE_AMX_KERNEL
#include "model/attention_kernel.h"
#endif

namespace oclip {
namespace {

bool IsCpuFloat(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat;
}

// t with its last dimension contiguous (the kernel reads rows as vectors).
at::Tensor RowsContiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

// Whether `precision` runs on the bf16 tile kernel here (else the fp32 one).
bool UsesBf16Tiles(AttentionPrecision precision) {
  return precision == AttentionPrecision::kBf16 && AmxBf16Available();
}

}  // namespace

bool CpuAttentionApplies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& mask) {
  if (!c10::InferenceMode::is_enabled() || !Avx512Available() || !IsCpuFloat(q) ||
      !IsCpuFloat(k) || !IsCpuFloat(v)) {
    return false;
  }
  if (q.dim() != 4 || k.dim() != 4 || k.sizes() != v.sizes() || q.size(0) != k.size(0) ||
      q.size(1) != k.size(1) || q.size(3) != k.size(3)) {
    return false;
  }
  if (!mask.defined()) return true;
  if (!IsCpuFloat(mask) || mask.dim() > 4) return false;
  const std::vector<int64_t> full = {q.size(0), q.size(1), q.size(2), k.size(2)};
  for (int64_t i = 1; i <= mask.dim(); ++i) {
    const int64_t size = mask.size(-i);
    if (size != 1 && size != full[full.size() - i]) return false;
  }
  return true;
}

const char* CpuAttentionKernel(AttentionPrecision precision) {
  if (!Avx512Available()) return "aten_matmul_softmax_fp32";
  return UsesBf16Tiles(precision) ? "amx_bf16" : "avx512_fp32";
}

at::Tensor CpuAttention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                        const at::Tensor& mask_in, AttentionPrecision precision) {
  TORCH_CHECK(CpuAttentionApplies(q_in, k_in, v_in, mask_in),
              "CpuAttention: needs InferenceMode, AVX-512 and fp32 CPU tensors q [N, H, Lq, D], k "
              "and v [N, H, Lk, D] and a broadcastable fp32 mask; got q ",
              q_in.sizes(), ", k ", k_in.sizes(), ", v ", v_in.sizes());
#if OCLIP_HAVE_AMX_KERNEL
  const at::Tensor q = RowsContiguous(q_in), k = RowsContiguous(k_in), v = RowsContiguous(v_in);
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), dim = q.size(3);
  const int64_t keys = k.size(2);
  at::Tensor mask;
  if (mask_in.defined()) mask = RowsContiguous(mask_in.expand({batch, heads, queries, keys}));
  at::Tensor out = at::empty({batch, queries, heads, dim}, q.options());
  if (out.numel() == 0) return out.permute({0, 2, 1, 3});
  // What every group shares; the loop sets only the group's first rows and count.
  amx_internal::AttentionHeads shared;
  shared.first.q_stride = q.stride(2);
  shared.first.k_stride = k.stride(2);
  shared.first.v_stride = v.stride(2);
  shared.first.mask_stride = mask.defined() ? mask.stride(2) : 0;
  shared.first.out_stride = out.stride(1);
  shared.first.queries = queries;
  shared.first.keys = keys;
  shared.first.dim = dim;
  shared.first.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
  shared.q_head_stride = q.stride(1);
  shared.k_head_stride = k.stride(1);
  shared.v_head_stride = v.stride(1);
  shared.mask_head_stride = mask.defined() ? mask.stride(1) : 0;
  shared.out_head_stride = out.stride(2);
  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  const float* mask_data = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* out_data = out.data_ptr<float>();
  const bool bf16 = UsesBf16Tiles(precision);
  // Work items are groups of one image's heads. The bf16 kernel converts a
  // group's operands together (model/attention_kernel.h): as many heads as
  // keep its scratch within half of a 2 MiB L2, fewer where that would leave
  // a thread without work (a small batch).
  int64_t group = 1;
  if (bf16) {
    constexpr int64_t kGroupBytes = int64_t{1} << 20;
    const int64_t per_head = amx_internal::Bf16AttentionScratchBytes(2, queries, keys, dim) -
                             amx_internal::Bf16AttentionScratchBytes(1, queries, keys, dim);
    const int64_t threads = at::get_num_threads();
    group = std::clamp(kGroupBytes / per_head, int64_t{1}, heads);
    group = std::min(group, std::max(int64_t{1}, batch * heads / threads));
  }
  const int64_t groups_per_image = (heads + group - 1) / group;
  const int64_t scratch_bytes =
      bf16 ? amx_internal::Bf16AttentionScratchBytes(group, queries, keys, dim)
           : amx_internal::AttentionScratchFloats(queries, keys, dim) *
                 static_cast<int64_t>(sizeof(float));
  at::parallel_for(0, batch * groups_per_image, 1, [&](int64_t begin, int64_t end) {
    // LibTorch's CPU allocator aligns to 64 bytes, as the tile kernel wants.
    const at::Tensor scratch = at::empty({scratch_bytes}, at::kByte);
    void* scratch_data = scratch.data_ptr();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / groups_per_image;
      const int64_t first = (item % groups_per_image) * group;
      amx_internal::AttentionHeads g = shared;
      g.first.q = q_data + n * q.stride(0) + first * q.stride(1);
      g.first.k = k_data + n * k.stride(0) + first * k.stride(1);
      g.first.v = v_data + n * v.stride(0) + first * v.stride(1);
      if (mask_data != nullptr) {
        g.first.mask = mask_data + n * mask.stride(0) + first * mask.stride(1);
      }
      g.first.out = out_data + n * out.stride(0) + first * out.stride(2);
      g.count = std::min(group, heads - first);
      if (bf16) {
        amx_internal::AttendHeadsBf16(g, scratch_data);
      } else {
        amx_internal::AttendHeads(g, static_cast<float*>(scratch_data));
      }
    }
  });
  return out.permute({0, 2, 1, 3});
#else
  TORCH_CHECK(false, "CpuAttention: built without the AVX-512 kernels");
#endif
}

}  // namespace oclip
