#include "model/amx_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/amx_gemm.h"

#if OCLIP_HAVE_AMX_KERNEL
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace oclip {
namespace {

using amx_internal::kBlockCols;
using amx_internal::kBlockRows;
using amx_internal::kTileBytes;
using amx_internal::kTileK;
using amx_internal::kTileRows;

int64_t RoundUp(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

#if OCLIP_HAVE_AMX_KERNEL
// What CPUID, XCR0 and Linux allow this process: every kernel needs AVX-512
// F/BW/VL and its register state; the AMX ones also the tile state, plus
// AMX-INT8 or AMX-BF16 with AVX512-BF16.
struct AmxSupport {
  bool avx512 = false;
  bool int8 = false;
  bool bf16 = false;
};

AmxSupport ProbeAmx() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return {};
  __cpuid(1, eax, ebx, ecx, edx);
  if ((ecx & (1u << 27)) == 0) return {};  // OSXSAVE: XGETBV usable
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool avx512 = (ebx & (1u << 16)) && (ebx & (1u << 30)) && (ebx & (1u << 31));  // F, BW, VL
  const bool tile = (edx & (1u << 24)) != 0;
  const bool amx_int8 = (edx & (1u << 25)) != 0;
  const bool amx_bf16 = (edx & (1u << 22)) != 0;
  const unsigned leaf7_subleaves = eax;
  bool avx512_bf16 = false;
  if (leaf7_subleaves >= 1) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    avx512_bf16 = (eax & (1u << 5)) != 0;
  }
  if (!avx512) return {};
  uint32_t xcr0_low = 0, xcr0_high = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  const uint64_t xcr0 = (static_cast<uint64_t>(xcr0_high) << 32) | xcr0_low;
  // SSE, AVX, AVX-512 opmask/ZMM_Hi256/Hi16_ZMM; then XTILECFG, XTILEDATA.
  const uint64_t avx512_state = (1ull << 1) | (1ull << 2) | (1ull << 5) | (1ull << 6) | (1ull << 7);
  const uint64_t tile_state = (1ull << 17) | (1ull << 18);
  if ((xcr0 & avx512_state) != avx512_state) return {};
  AmxSupport support;
  support.avx512 = true;
  if (!tile || (xcr0 & tile_state) != tile_state) return support;
  // Linux (5.16+) hands out the 8 KiB tile data state only on request, once
  // per process; without it the first tile instruction kills the process.
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return support;
  support.int8 = amx_int8;
  support.bf16 = amx_bf16 && avx512_bf16;
  return support;
}

const AmxSupport& Amx() {
  static const AmxSupport support = ProbeAmx();
  return support;
}
#endif

// The checks every AMX Linear makes of its arguments (in_features ->
// out_features); returns the output's shape [..., out_features].
std::vector<int64_t> CheckLinearArguments(const char* name, const at::Tensor& x,
                                          int64_t in_features, int64_t out_features,
                                          const at::Tensor& bias, const AmxEpilogue& epilogue,
                                          const AmxInputLayerNorm& input_norm) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == in_features, name, ": input ", x.sizes(),
              " does not end in the weight's ", in_features, " inputs");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == out_features), name, ": bias ",
              bias.sizes(), " does not match ", out_features, " outputs");
  TORCH_CHECK(
      !input_norm.weight.defined() ||
          (input_norm.weight.dim() == 1 && input_norm.weight.size(0) == in_features &&
           input_norm.bias.defined() && input_norm.bias.sizes() == input_norm.weight.sizes()),
      name, ": the LayerNorm's weight and bias must both be [", in_features, "]");
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = out_features;
  TORCH_CHECK(!epilogue.residual.defined() || epilogue.residual.sizes() == out_shape, name,
              ": residual ", epilogue.residual.sizes(), " does not have the output's shape ",
              out_shape);
  return out_shape;
}

// The fp32 operands an AMX Linear reads besides x, converted once per call.
struct FloatOperands {
  FloatOperands(const at::Tensor& bias, const AmxEpilogue& epilogue,
                const AmxInputLayerNorm& input_norm)
      : bias(bias.defined() ? bias.to(at::kFloat).contiguous() : bias),
        residual(epilogue.residual.defined() ? epilogue.residual.to(at::kFloat).contiguous()
                                             : epilogue.residual),
        activation_after_residual(epilogue.activation_after_residual) {
    if (!input_norm.weight.defined()) return;
    norm_weight = input_norm.weight.to(at::kFloat).contiguous();
    norm_bias = input_norm.bias.to(at::kFloat).contiguous();
    norm = amx_internal::RowLayerNorm{norm_weight.data_ptr<float>(), norm_bias.data_ptr<float>(),
                                      static_cast<float>(input_norm.eps)};
  }
  const float* BiasData() const { return bias.defined() ? bias.data_ptr<float>() : nullptr; }
  const float* ResidualData() const {
    return residual.defined() ? residual.data_ptr<float>() : nullptr;
  }
  const amx_internal::RowLayerNorm* Norm() const { return norm_weight.defined() ? &norm : nullptr; }

  at::Tensor bias;
  at::Tensor residual;  // row-major, as the output
  bool activation_after_residual;
  at::Tensor norm_weight;
  at::Tensor norm_bias;
  amx_internal::RowLayerNorm norm{};
};

// The output half of either GEMM's arguments: `out` [m, weight's outputs].
template <typename PackedWeight>
amx_internal::GemmOutput OutputOf(const PackedWeight& weight, const FloatOperands& operands,
                                  AmxActivation activation, at::Tensor& out, int64_t m) {
  amx_internal::GemmOutput output;
  output.bias = operands.BiasData();
  output.out = out.data_ptr<float>();
  output.activation = activation;
  output.residual = operands.ResidualData();
  output.activation_after_residual = operands.activation_after_residual;
  output.m = m;
  output.n = weight.out_features;
  output.k_padded = weight.padded_in;
  output.m_padded = RoundUp(m, kBlockRows);
  output.n_padded = weight.padded_out;
  return output;
}

// Runs one AMX Linear over LibTorch's threads. prepare(row_begin, row_end, a)
// writes the A tiles of those rows into `a` (a_row_elements per row),
// multiply(row_begin, row_end, col_block_begin, col_block_end, a) computes
// their outputs from it.
template <typename Element, typename Prepare, typename Multiply>
void ParallelLinear(int64_t m_padded, int64_t col_blocks, int64_t item_rows, int64_t a_row_elements,
                    const Prepare& prepare, const Multiply& multiply) {
  const int64_t row_blocks = m_padded / kBlockRows;
  const at::ScalarType element_type = sizeof(Element) == 1 ? at::kByte : at::kShort;
  if (row_blocks >= at::get_num_threads()) {
    // Each thread owns whole rows: it prepares item_rows of them and multiplies
    // them by every weight panel, with no barrier in between (one parallel
    // region per call; the weights are shared read-only). Its items go
    // through one buffer of its own, which stays in its L2: writing all of A
    // first would stream it through memory and back.
    const int64_t item_blocks = item_rows / kBlockRows;
    at::parallel_for(0, row_blocks, 1, [&](int64_t begin, int64_t end) {
      const at::Tensor buffer = at::empty({item_rows * a_row_elements}, element_type);
      auto* a = static_cast<Element*>(buffer.data_ptr());
      for (int64_t block = begin; block < end; block += item_blocks) {
        const int64_t rows_begin = block * kBlockRows;
        const int64_t rows_end = std::min(block + item_blocks, end) * kBlockRows;
        prepare(rows_begin, rows_end, a);
        multiply(rows_begin, rows_end, 0, col_blocks, a);
      }
    });
  } else {
    // Few rows (a small batch): prepare them here, split the columns.
    const at::Tensor buffer = at::empty({m_padded * a_row_elements}, element_type);
    auto* a = static_cast<Element*>(buffer.data_ptr());
    prepare(0, m_padded, a);
    at::parallel_for(0, col_blocks, 1,
                     [&](int64_t begin, int64_t end) { multiply(0, m_padded, begin, end, a); });
  }
}

// `gemm` (AmxGemm or AmxBf16x3Gemm) on the rows whose A tiles `a` holds.
template <typename Args, typename Element>
void MultiplyRows(void (*gemm)(const Args&, int64_t, int64_t, int64_t, int64_t), const Args& args,
                  const Element* a, int64_t row_begin, int64_t row_end, int64_t col_begin,
                  int64_t col_end) {
  Args rows = args;
  rows.a = a;
  gemm(rows, row_begin, row_end, col_begin, col_end);
}

// The bf16x3 GEMM into `out` [m, weight's outputs] (row-major fp32), over
// LibTorch's threads; split(row_begin, row_end, a) writes those rows' A tiles.
template <typename Split>
void RunBf16x3(const Bf16x3PackedWeight& weight, const FloatOperands& operands,
               AmxActivation activation, at::Tensor& out, int64_t m, const Split& split) {
  amx_internal::Bf16x3GemmArgs args;
  static_cast<amx_internal::GemmOutput&>(args) = OutputOf(weight, operands, activation, out, m);
  args.b = reinterpret_cast<const uint16_t*>(weight.packed.data_ptr<int16_t>());
  ParallelLinear<uint16_t>(args.m_padded, weight.padded_out / kBlockCols,
                           amx_internal::kBf16ItemRows, 2 * weight.padded_in, split,
                           [&](int64_t row_begin, int64_t row_end, int64_t col_begin,
                               int64_t col_end, const uint16_t* a) {
                             MultiplyRows(&amx_internal::AmxBf16x3Gemm, args, a, row_begin, row_end,
                                          col_begin, col_end);
                           });
}

}  // namespace

bool Avx512Available() {
#if OCLIP_HAVE_AMX_KERNEL
  return Amx().avx512;
#else
  return false;
#endif
}

bool AmxInt8Available() {
#if OCLIP_HAVE_AMX_KERNEL
  return Amx().int8;
#else
  return false;
#endif
}

bool AmxBf16Available() {
#if OCLIP_HAVE_AMX_KERNEL
  return Amx().bf16;
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
                         const at::Tensor& bias, const AmxEpilogue& epilogue,
                         const AmxInputLayerNorm& input_norm) {
  TORCH_CHECK(AmxInt8Available(),
              "AmxInt8Linear needs a CPU with AMX-INT8 (and Linux's permission)");
  const std::vector<int64_t> out_shape = CheckLinearArguments(
      "AmxInt8Linear", x, weight.in_features, weight.out_features, bias, epilogue, input_norm);
  const at::Tensor flat = x.reshape({-1, weight.in_features}).to(at::kFloat).contiguous();
  const int64_t m = flat.size(0);
  if (m == 0) return at::empty(out_shape, x.options());
#if OCLIP_HAVE_AMX_KERNEL
  const FloatOperands operands(bias, epilogue, input_norm);
  const at::Tensor row_scales = at::empty({m}, at::kFloat);
  const at::Tensor zero_points = at::empty({m}, at::kInt);
  at::Tensor out = at::empty({m, weight.out_features}, at::kFloat);
  amx_internal::GemmArgs args;
  static_cast<amx_internal::GemmOutput&>(args) =
      OutputOf(weight, operands, epilogue.activation, out, m);
  args.row_scales = row_scales.data_ptr<float>();
  args.zero_points = zero_points.data_ptr<int32_t>();
  args.b = weight.packed.data_ptr<int8_t>();
  args.column_scales = weight.scales.data_ptr<float>();
  args.column_sums = weight.column_sums.data_ptr<int32_t>();
  const float* x_data = flat.data_ptr<float>();
  float* scale_data = row_scales.data_ptr<float>();
  int32_t* zero_point_data = zero_points.data_ptr<int32_t>();
  ParallelLinear<uint8_t>(
      args.m_padded, weight.padded_out / kBlockCols, amx_internal::kItemRows, weight.padded_in,
      [&](int64_t begin, int64_t end, uint8_t* a) {
        amx_internal::QuantizeRowsToTiles(x_data, m, weight.in_features, weight.padded_in, begin,
                                          end, a, scale_data, zero_point_data, operands.Norm());
      },
      [&](int64_t row_begin, int64_t row_end, int64_t col_begin, int64_t col_end,
          const uint8_t* a) {
        MultiplyRows(&amx_internal::AmxGemm, args, a, row_begin, row_end, col_begin, col_end);
      });
  return out.view(out_shape).to(x.scalar_type());
#else
  TORCH_CHECK(false, "AmxInt8Linear: built without the AMX kernel");
#endif
}

Bf16x3PackedWeight PackBf16x3Weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) > 0 && weight.size(1) > 0,
              "PackBf16x3Weight needs a non-empty [out, in] weight, got ", weight.sizes());
  const at::Tensor w = weight.detach().to(at::kCPU, at::kFloat).contiguous();
  // LibTorch's float -> bfloat16 conversion rounds to nearest even, as the
  // kernel's activation split does.
  const at::Tensor hi = w.to(at::kBFloat16);
  const at::Tensor lo = (w - hi.to(at::kFloat)).to(at::kBFloat16);
  Bf16x3PackedWeight result;
  result.out_features = w.size(0);
  result.in_features = w.size(1);
  result.padded_out = RoundUp(result.out_features, kBlockCols);
  result.padded_in = RoundUp(result.in_features, amx_internal::kBf16TileK);
  result.packed = at::zeros({result.padded_out * result.padded_in * 2}, at::kShort);

  const int64_t k = result.in_features;
  const int64_t k_tiles = result.padded_in / amx_internal::kBf16TileK;
  const int64_t tile_elements = kTileBytes / 2;
  const auto* hi_data = reinterpret_cast<const uint16_t*>(hi.data_ptr<at::BFloat16>());
  const auto* lo_data = reinterpret_cast<const uint16_t*>(lo.data_ptr<at::BFloat16>());
  auto* packed = reinterpret_cast<uint16_t*>(result.packed.data_ptr<int16_t>());
  for (int64_t n = 0; n < result.out_features; ++n) {
    uint16_t* strip = packed + (n / kTileRows) * 2 * k_tiles * tile_elements + (n % kTileRows) * 2;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t offset = (i / amx_internal::kBf16TileK) * tile_elements +
                             ((i % amx_internal::kBf16TileK) / 2) * 32 + i % 2;
      strip[offset] = hi_data[n * k + i];
      strip[k_tiles * tile_elements + offset] = lo_data[n * k + i];
    }
  }
  return result;
}

at::Tensor AmxBf16x3Linear(const at::Tensor& x, const Bf16x3PackedWeight& weight,
                           const at::Tensor& bias, const AmxEpilogue& epilogue,
                           const AmxInputLayerNorm& input_norm) {
  TORCH_CHECK(AmxBf16Available(),
              "AmxBf16x3Linear needs a CPU with AMX-BF16 and AVX512-BF16 (and Linux's permission)");
  const std::vector<int64_t> out_shape = CheckLinearArguments(
      "AmxBf16x3Linear", x, weight.in_features, weight.out_features, bias, epilogue, input_norm);
  const at::Tensor flat = x.reshape({-1, weight.in_features}).to(at::kFloat).contiguous();
  const int64_t m = flat.size(0);
  if (m == 0) return at::empty(out_shape, x.options());
#if OCLIP_HAVE_AMX_KERNEL
  const FloatOperands operands(bias, epilogue, input_norm);
  at::Tensor out = at::empty({m, weight.out_features}, at::kFloat);
  const float* x_data = flat.data_ptr<float>();
  RunBf16x3(weight, operands, epilogue.activation, out, m,
            [&](int64_t begin, int64_t end, uint16_t* a) {
              amx_internal::SplitRowsToBf16Tiles(x_data, m, weight.in_features, weight.padded_in,
                                                 begin, end, a, operands.Norm());
            });
  return out.view(out_shape).to(x.scalar_type());
#else
  TORCH_CHECK(false, "AmxBf16x3Linear: built without the AMX kernel");
#endif
}

Bf16x3PackedWeight PackBf16x3Conv3x3Weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) > 0 && weight.size(1) > 0 &&
                  weight.size(2) == 3 && weight.size(3) == 3,
              "PackBf16x3Conv3x3Weight needs a [out, in, 3, 3] weight, got ", weight.sizes());
  const int64_t channels = weight.size(1);
  const int64_t channels_padded = RoundUp(channels, amx_internal::kBf16TileK);
  // [out, in, 3, 3] -> [out, 3, 3, in'] -> [out, 9 in']: k = tap * in' + c.
  at::Tensor taps = weight.detach().to(at::kCPU, at::kFloat).permute({0, 2, 3, 1});
  if (channels_padded != channels) {
    taps = at::constant_pad_nd(taps, {0, channels_padded - channels});
  }
  return PackBf16x3Weight(taps.reshape({weight.size(0), 9 * channels_padded}));
}

at::Tensor AmxBf16x3Conv3x3(const at::Tensor& x, const Bf16x3PackedWeight& weight,
                            const at::Tensor& bias, const AmxEpilogue& epilogue) {
  TORCH_CHECK(
      AmxBf16Available(),
      "AmxBf16x3Conv3x3 needs a CPU with AMX-BF16 and AVX512-BF16 (and Linux's permission)");
  TORCH_CHECK(
      x.dim() == 4 && RoundUp(x.size(1), amx_internal::kBf16TileK) * 9 == weight.in_features,
      "AmxBf16x3Conv3x3: input ", x.sizes(), " does not have the weight's ", weight.in_features / 9,
      " (padded) channels");
  TORCH_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.out_features),
              "AmxBf16x3Conv3x3: bias ", bias.sizes(), " does not match ", weight.out_features,
              " outputs");
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  TORCH_CHECK(!epilogue.residual.defined() ||
                  epilogue.residual.sizes() ==
                      at::IntArrayRef({batch, weight.out_features, height, width}),
              "AmxBf16x3Conv3x3: residual ", epilogue.residual.sizes(),
              " does not have the output's shape [", batch, ", ", weight.out_features, ", ",
              height, ", ", width, "]");
  const int64_t m = batch * height * width;
  // NHWC in memory, as [N, H, W, C].
  const at::Tensor pixels =
      x.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1});
  at::Tensor out = at::empty({batch, height, width, weight.out_features}, at::kFloat);
  if (m == 0) return out.permute({0, 3, 1, 2});
#if OCLIP_HAVE_AMX_KERNEL
  // The residual as the output's rows: [N, H, W, out].
  AmxEpilogue row_epilogue = epilogue;
  if (epilogue.residual.defined()) row_epilogue.residual = epilogue.residual.permute({0, 2, 3, 1});
  const FloatOperands operands(bias, row_epilogue, {});
  at::Tensor rows = out.view({m, weight.out_features});
  const float* x_data = pixels.data_ptr<float>();
  RunBf16x3(weight, operands, epilogue.activation, rows, m,
            [&](int64_t begin, int64_t end, uint16_t* a) {
              amx_internal::SplitPatchRowsToBf16Tiles(x_data, batch, height, width, channels, begin,
                                                      end, a);
            });
  return out.permute({0, 3, 1, 2});
#else
  TORCH_CHECK(false, "AmxBf16x3Conv3x3: built without the AMX kernel");
#endif
}

}  // namespace oclip
