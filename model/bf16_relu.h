// In-place relu(y + residual) and relu(y) on bfloat16 activations, vectorized
// (model/bf16_relu_kernel.h) where the CPU has AVX-512: the tail of the
// ResNet's convolutions under `--precision bf16|int8`, which write bf16.

#ifndef OCLIP_MODEL_BF16_RELU_H_
#define OCLIP_MODEL_BF16_RELU_H_

#include <ATen/core/Tensor.h>

namespace oclip {

// y = relu(y + residual) (residual undefined: y = relu(y)), in place, over
// LibTorch's intra-op threads, and true; or false, with y untouched, where
// the kernel does not apply: no AVX-512, y not bf16 or not dense, or the
// residual not bf16 with y's sizes and strides. Results are LibTorch's
// (model/bf16_relu_kernel.h).
bool TryAddReluBf16InPlace(at::Tensor& y, const at::Tensor& residual);

}  // namespace oclip

#endif  // OCLIP_MODEL_BF16_RELU_H_
