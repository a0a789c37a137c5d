// The inner loop of model/cpu_attention.h: one head's softmax(q·kᵀ·scale +
// mask)·v with AVX-512, in its own translation unit (attention_kernel.cc) that
// is compiled with the AVX-512 flags and includes no LibTorch or
// standard-library template header (see model/amx_gemm.h for why). Plain
// pointers and sizes only; call it only where Avx512Available()
// (model/amx_linear.h) said yes.

#ifndef OCLIP_MODEL_ATTENTION_KERNEL_H_
#define OCLIP_MODEL_ATTENTION_KERNEL_H_

#include <cstdint>

namespace oclip::amx_internal {

// One head: rows of `dim` floats (contiguous within a row), `*_stride` floats
// apart. mask is additive, [queries, keys] with rows mask_stride apart
// (0: one row for every query), or null.
struct AttentionHead {
  const float* q = nullptr;  // [queries, dim]
  const float* k = nullptr;  // [keys, dim]
  const float* v = nullptr;  // [keys, dim]
  int64_t q_stride = 0, k_stride = 0, v_stride = 0;
  const float* mask = nullptr;
  int64_t mask_stride = 0;
  float* out = nullptr;  // [queries, dim]
  int64_t out_stride = 0;
  int64_t queries = 0, keys = 0, dim = 0;
  float scale = 1.0f;
};

// Floats of scratch AttendHead needs for these sizes.
int64_t AttentionScratchFloats(int64_t queries, int64_t keys, int64_t dim);

// out = softmax((q * scale)·kᵀ + mask)·v, in PyTorch's order of operations:
// q is scaled first, the row's maximum is subtracted before exp, and the
// exponentials are multiplied by 1 / their sum. Keys whose score is -inf get
// probability 0 (a row of only -inf gives NaN, as in PyTorch). fp32 throughout.
void AttendHead(const AttentionHead& head, float* scratch);

}  // namespace oclip::amx_internal

#endif  // OCLIP_MODEL_ATTENTION_KERNEL_H_
