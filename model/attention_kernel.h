// The inner loops of model/cpu_attention.h: heads' softmax(q·kᵀ·scale +
// mask)·v, in fp32 with AVX-512 or in bfloat16 on AMX tiles, in their own
// translation unit (attention_kernel.cc) that is compiled with the AMX/AVX-512
// flags and includes no LibTorch or standard-library template header (see
// model/amx_gemm.h for why). Plain pointers and sizes only; call AttendHeads
// only where Avx512Available() and AttendHeadsBf16 only where
// AmxBf16Available() (model/amx_linear.h) said yes.

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

// Heads of one attention call that the kernels compute together:
// `first` is head 0; head h's q, k, v, mask and out start h * *_head_stride
// floats further (mask_head_stride 0: one mask for every head).
struct AttentionHeads {
  AttentionHead first;
  int64_t count = 1;
  int64_t q_head_stride = 0, k_head_stride = 0, v_head_stride = 0;
  int64_t mask_head_stride = 0, out_head_stride = 0;
};

// Floats of scratch AttendHeads needs for these sizes (any number of heads).
int64_t AttentionScratchFloats(int64_t queries, int64_t keys, int64_t dim);

// For each head in turn, out = softmax((q * scale)·kᵀ + mask)·v, in PyTorch's
// order of operations: q is scaled first, the row's maximum is subtracted
// before exp, and the exponentials are multiplied by 1 / their sum. Keys whose
// score is -inf get probability 0 (a row of only -inf gives NaN, as in
// PyTorch). fp32 throughout.
void AttendHeads(const AttentionHeads& heads, float* scratch);

// Bytes of scratch AttendHeadsBf16 needs for `heads` heads of these sizes.
int64_t Bf16AttentionScratchBytes(int64_t heads, int64_t queries, int64_t keys, int64_t dim);

// AttendHeads' contract for the lower precisions, on AMX-BF16 tiles: q *
// scale (scaled in fp32), k, the probabilities and v are rounded to bfloat16
// (nearest even) and both products accumulate in fp32 on the tiles; the mask,
// the softmax and the output stay fp32. Each product then carries bfloat16's
// 2^-9 relative rounding, as PyTorch's attention on a bf16 model does.
// Why a group: the heads' q, k and v are pieces of long rows that hold every
// head (the packed in_proj's output). Read head by head, those pieces defeat
// the hardware prefetcher and the reads wait on memory; the group's operands
// are therefore converted first, row by row across its heads, then each head
// is computed from its tiles.
// scratch: Bf16AttentionScratchBytes, 64-byte aligned. Loads the tile
// configuration and releases it.
void AttendHeadsBf16(const AttentionHeads& heads, void* scratch);

}  // namespace oclip::amx_internal

#endif  // OCLIP_MODEL_ATTENTION_KERNEL_H_
