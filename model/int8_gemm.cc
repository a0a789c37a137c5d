#include "model/int8_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/int8_gemm_amx.h"

#if OCLIP_HAVE_AMX_KERNEL
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace oclip {
namespace {

using int8_gemm_internal::kBlockCols;
using int8_gemm_internal::kBlockRows;
using int8_gemm_internal::kTileBytes;
using int8_gemm_internal::kTileK;
using int8_gemm_internal::kTileRows;

int64_t RoundUp(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

#if OCLIP_HAVE_AMX_KERNEL
bool ProbeAmxInt8() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid(1, eax, ebx, ecx, edx);
  if ((ecx & (1u << 27)) == 0) return false;  // OSXSAVE: XGETBV usable
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool avx512 = (ebx & (1u << 16)) && (ebx & (1u << 30)) && (ebx & (1u << 31));  // F, BW, VL
  const bool amx = (edx & (1u << 24)) && (edx & (1u << 25));                           // TILE, INT8
  if (!avx512 || !amx) return false;
  uint32_t xcr0_low = 0, xcr0_high = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  const uint64_t xcr0 = (static_cast<uint64_t>(xcr0_high) << 32) | xcr0_low;
  // SSE, AVX, AVX-512 opmask/ZMM_Hi256/Hi16_ZMM, XTILECFG, XTILEDATA.
  const uint64_t needed = (1ull << 1) | (1ull << 2) | (1ull << 5) | (1ull << 6) | (1ull << 7) |
                          (1ull << 17) | (1ull << 18);
  if ((xcr0 & needed) != needed) return false;
  // Linux (5.16+) hands out the 8 KiB tile data state only on request, once
  // per process; without it the first tile instruction kills the process.
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}
#endif

}  // namespace

bool AmxInt8Available() {
#if OCLIP_HAVE_AMX_KERNEL
  static const bool available = ProbeAmxInt8();
  return available;
#else
  return false;
#endif
}

Int8PackedWeight PackInt8Weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) > 0 && weight.size(1) > 0,
              "PackInt8Weight needs a non-empty [out, in] weight, got ", weight.sizes());
  const at::Tensor w = weight.detach().to(at::kCPU, at::kFloat).contiguous();
  Int8PackedWeight result;
  result.out_features = w.size(0);
  result.in_features = w.size(1);
  result.padded_out = RoundUp(result.out_features, kBlockCols);
  result.padded_in = RoundUp(result.in_features, kTileK);
  result.packed = at::zeros({result.padded_out * result.padded_in}, at::kChar);
  result.scales = at::ones({result.padded_out}, at::kFloat);
  result.column_sums = at::zeros({result.padded_out}, at::kInt);

  const int64_t k = result.in_features;
  const int64_t k_tiles = result.padded_in / kTileK;
  const float* w_data = w.data_ptr<float>();
  int8_t* packed = result.packed.data_ptr<int8_t>();
  float* scales = result.scales.data_ptr<float>();
  int32_t* sums = result.column_sums.data_ptr<int32_t>();
  for (int64_t n = 0; n < result.out_features; ++n) {
    const float* row = w_data + n * k;
    float max_abs = 0.0f;
    for (int64_t i = 0; i < k; ++i) max_abs = std::max(max_abs, std::abs(row[i]));
    const float scale = std::max(max_abs / 127.0f, 1e-8f);
    scales[n] = scale;
    int8_t* strip = packed + (n / kTileRows) * k_tiles * kTileBytes + (n % kTileRows) * 4;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      const float q = std::clamp(std::nearbyint(row[i] / scale), -127.0f, 127.0f);
      strip[(i / kTileK) * kTileBytes + ((i % kTileK) / 4) * 64 + i % 4] = static_cast<int8_t>(q);
      sum += static_cast<int32_t>(q);
    }
    sums[n] = sum;
  }
  return result;
}

at::Tensor AmxInt8Linear(const at::Tensor& x, const Int8PackedWeight& weight,
                         const at::Tensor& bias, const Int8Epilogue& epilogue,
                         const Int8InputLayerNorm& input_norm) {
  TORCH_CHECK(AmxInt8Available(), "AmxInt8Linear needs a CPU with AMX-INT8 (and Linux's permission)");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == weight.in_features, "AmxInt8Linear: input ",
              x.sizes(), " does not end in the weight's ", weight.in_features, " inputs");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.out_features),
              "AmxInt8Linear: bias ", bias.sizes(), " does not match ", weight.out_features,
              " outputs");
  TORCH_CHECK(!input_norm.weight.defined() ||
                  (input_norm.weight.dim() == 1 && input_norm.weight.size(0) == weight.in_features &&
                   input_norm.bias.defined() && input_norm.bias.sizes() == input_norm.weight.sizes()),
              "AmxInt8Linear: the LayerNorm's weight and bias must both be [", weight.in_features,
              "]");
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = weight.out_features;
  TORCH_CHECK(!epilogue.residual.defined() || epilogue.residual.sizes() == out_shape,
              "AmxInt8Linear: residual ", epilogue.residual.sizes(),
              " does not have the output's shape ", out_shape);
  const at::Tensor flat = x.reshape({-1, weight.in_features}).to(at::kFloat).contiguous();
  const int64_t m = flat.size(0);
  if (m == 0) return at::empty(out_shape, x.options());
#if OCLIP_HAVE_AMX_KERNEL
  const at::Tensor bias_f = bias.defined() ? bias.to(at::kFloat).contiguous() : bias;
  const at::Tensor residual_f = epilogue.residual.defined()
                                    ? epilogue.residual.to(at::kFloat).contiguous()
                                    : epilogue.residual;
  const int64_t m_padded = RoundUp(m, kBlockRows);
  const at::Tensor a = at::empty({m_padded * weight.padded_in}, at::kByte);
  const at::Tensor row_scales = at::empty({m}, at::kFloat);
  const at::Tensor zero_points = at::empty({m}, at::kInt);
  at::Tensor out = at::empty({m, weight.out_features}, at::kFloat);
  const float* x_data = flat.data_ptr<float>();
  uint8_t* a_data = a.data_ptr<uint8_t>();
  float* scale_data = row_scales.data_ptr<float>();
  int32_t* zero_point_data = zero_points.data_ptr<int32_t>();
  int8_gemm_internal::GemmArgs args;
  args.a = a_data;
  args.row_scales = scale_data;
  args.zero_points = zero_point_data;
  args.b = weight.packed.data_ptr<int8_t>();
  args.column_scales = weight.scales.data_ptr<float>();
  args.column_sums = weight.column_sums.data_ptr<int32_t>();
  args.bias = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
  args.out = out.data_ptr<float>();
  args.residual = residual_f.defined() ? residual_f.data_ptr<float>() : nullptr;
  args.activation = epilogue.activation;
  args.m = m;
  args.n = weight.out_features;
  args.k_padded = weight.padded_in;
  args.m_padded = m_padded;
  args.n_padded = weight.padded_out;
  at::Tensor norm_weight, norm_bias;
  int8_gemm_internal::RowLayerNorm norm{};
  if (input_norm.weight.defined()) {
    norm_weight = input_norm.weight.to(at::kFloat).contiguous();
    norm_bias = input_norm.bias.to(at::kFloat).contiguous();
    norm.gamma = norm_weight.data_ptr<float>();
    norm.beta = norm_bias.data_ptr<float>();
    norm.eps = static_cast<float>(input_norm.eps);
  }
  // Quantizes rows [begin, end) of x (or of LayerNorm(x)) into A, for the calling thread.
  auto quantize = [&](int64_t begin, int64_t end) {
    int8_gemm_internal::QuantizeRowsToTiles(x_data, m, weight.in_features, weight.padded_in,
                                            begin, end, a_data, scale_data, zero_point_data,
                                            input_norm.weight.defined() ? &norm : nullptr);
  };
  const int64_t row_blocks = m_padded / kBlockRows;
  const int64_t col_blocks = weight.padded_out / kBlockCols;
  if (row_blocks >= at::get_num_threads()) {
    // Each thread owns whole rows: it quantizes kItemRows of them and multiplies
    // them by every weight panel, with no barrier in between (one parallel
    // region per call; the weights are shared read-only).
    at::parallel_for(0, row_blocks, 1, [&](int64_t begin, int64_t end) {
      constexpr int64_t kItemBlocks = int8_gemm_internal::kItemRows / kBlockRows;
      for (int64_t block = begin; block < end; block += kItemBlocks) {
        const int64_t rows_begin = block * kBlockRows;
        const int64_t rows_end = std::min(block + kItemBlocks, end) * kBlockRows;
        quantize(rows_begin, rows_end);
        int8_gemm_internal::AmxGemm(args, rows_begin, rows_end, 0, col_blocks);
      }
    });
  } else {
    // Few rows (a small batch): quantize them here, split the columns.
    quantize(0, m_padded);
    at::parallel_for(0, col_blocks, 1, [&](int64_t begin, int64_t end) {
      int8_gemm_internal::AmxGemm(args, 0, m_padded, begin, end);
    });
  }
  return out.view(out_shape).to(x.scalar_type());
#else
  TORCH_CHECK(false, "AmxInt8Linear: built without the AMX kernel");
#endif
}

}  // namespace oclip
