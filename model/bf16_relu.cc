#include "model/bf16_relu.h"

#include <ATen/Parallel.h>

#include "model/amx_linear.h"
#include "model/bf16_relu_kernel.h"

namespace oclip {

bool TryAddReluBf16InPlace(at::Tensor& y, const at::Tensor& residual) {
#if OCLIP_HAVE_AMX_KERNEL
  if (!Avx512Available() || y.scalar_type() != at::kBFloat16 || !y.is_cpu() ||
      !y.is_non_overlapping_and_dense()) {
    return false;
  }
  if (residual.defined() &&
      (residual.scalar_type() != at::kBFloat16 || !residual.is_cpu() ||
       residual.sizes() != y.sizes() || residual.strides() != y.strides() ||
       !residual.is_non_overlapping_and_dense())) {
    return false;
  }
  // A dense tensor's elements fill [data, data + numel) in some order; with
  // equal strides, the residual's element at each offset is y's partner.
  auto* out = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  const auto* add =
      residual.defined() ? reinterpret_cast<const uint16_t*>(residual.data_ptr<at::BFloat16>())
                         : nullptr;
  constexpr int64_t kGrain = 1 << 16;  // elements per task: 128 KiB of y
  at::parallel_for(0, y.numel(), kGrain, [&](int64_t begin, int64_t end) {
    if (add != nullptr) {
      amx_internal::AddReluBf16InPlace(out + begin, add + begin, end - begin);
    } else {
      amx_internal::ReluBf16InPlace(out + begin, end - begin);
    }
  });
  return true;
#else
  (void)y;
  (void)residual;
  return false;
#endif
}

}  // namespace oclip
