// The ResNet's ReLU, and its residual add before it, on bfloat16 activations
// (`--precision bf16|int8`, whose convolutions write bf16), in their own
// translation unit (bf16_relu_kernel.cc) compiled with the AVX-512 flags and
// including no LibTorch or standard-library template header (see
// model/amx_gemm.h for why). LibTorch 1.13's bf16 relu and add run element by
// element: at batch 32 they took a sixth of RN50's int8 image time, against
// a few percent for one vectorized pass. Call only where Avx512Available()
// (model/amx_linear.h) said yes.
//
// Both compute in fp32 and round once to bf16 (nearest even, NaN kept), as
// LibTorch's bf16 add does; ReLU after that rounding or before it gives the
// same bf16, so the results are LibTorch's relu(y + residual) and relu(y)
// bit for bit (up to the sign of a zero).

#ifndef OCLIP_MODEL_BF16_RELU_KERNEL_H_
#define OCLIP_MODEL_BF16_RELU_KERNEL_H_

#include <cstdint>

namespace oclip::amx_internal {

// y[i] = relu(y[i]) for i < count; bfloat16 bits.
void ReluBf16InPlace(uint16_t* y, int64_t count);

// y[i] = relu(bf16(float(y[i]) + float(residual[i]))) for i < count.
void AddReluBf16InPlace(uint16_t* y, const uint16_t* residual, int64_t count);

}  // namespace oclip::amx_internal

#endif  // OCLIP_MODEL_BF16_RELU_KERNEL_H_
