#include "model/cpu_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

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

at::Tensor CpuAttention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                        const at::Tensor& mask_in) {
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
  // What every head shares; the loop sets only the head's own rows.
  amx_internal::AttentionHead shared;
  shared.q_stride = q.stride(2);
  shared.k_stride = k.stride(2);
  shared.v_stride = v.stride(2);
  shared.mask_stride = mask.defined() ? mask.stride(2) : 0;
  shared.out_stride = out.stride(1);
  shared.queries = queries;
  shared.keys = keys;
  shared.dim = dim;
  shared.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));
  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  const float* mask_data = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* out_data = out.data_ptr<float>();
  const int64_t scratch_floats = amx_internal::AttentionScratchFloats(queries, keys, dim);
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(scratch_floats);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / heads, h = index % heads;
      amx_internal::AttentionHead head = shared;
      head.q = q_data + n * q.stride(0) + h * q.stride(1);
      head.k = k_data + n * k.stride(0) + h * k.stride(1);
      head.v = v_data + n * v.stride(0) + h * v.stride(1);
      if (mask_data != nullptr) head.mask = mask_data + n * mask.stride(0) + h * mask.stride(1);
      head.out = out_data + n * out.stride(0) + h * out.stride(2);
      amx_internal::AttendHead(head, scratch.data());
    }
  });
  return out.permute({0, 2, 1, 3});
#else
  TORCH_CHECK(false, "CpuAttention: built without the AVX-512 kernels");
#endif
}

}  // namespace oclip
