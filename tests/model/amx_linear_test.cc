// The AMX Linears (model/amx_linear.h). int8 against a scalar reference of the
// same quantization arithmetic written here: int32 accumulation is exact and
// the fp32 epilogue is the same fma, so the two agree to float rounding.
// Shapes cover tile remainders in M, N and K, M = 1, K around multiples of 64,
// with and without bias; the fused epilogue (GELU, QuickGELU, residual)
// against the unfused kernel followed by LibTorch's ops, the fused input
// LayerNorm against torch::layer_norm before the kernel, and the epilogue's
// vectorized erf / exp / sigmoid against std:: in double. The weight packing
// runs (and is tested) without AMX; the GEMM and epilogue tests skip, saying
// so, on a CPU without AMX-INT8. fp32 as bf16x3 against the Linear computed in
// double (weight split and layout, tile remainders, rows of very different
// magnitudes, the fused LayerNorm, activations and residual, threads); its
// tests skip on a CPU without AMX-BF16.

#include "model/amx_linear.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <vector>

#include "model/amx_gemm.h"

namespace oclip::testing {
namespace {

constexpr char kNoAmx[] =
    "this CPU (or kernel) offers no AMX-INT8 with AVX-512: the AMX int8 GEMM is not run here";

struct QuantizedWeight {
  std::vector<int8_t> q;  // [n, k]
  std::vector<float> scales;
  std::vector<int32_t> sums;
};

// Per output channel, symmetric: scale = max(max|w| / 127, 1e-8), q = nearbyint(w / scale).
QuantizedWeight QuantizeWeight(const torch::Tensor& weight) {
  const torch::Tensor w = weight.to(torch::kFloat).contiguous();
  const int64_t n = w.size(0), k = w.size(1);
  const float* data = w.data_ptr<float>();
  QuantizedWeight result{std::vector<int8_t>(n * k), std::vector<float>(n), std::vector<int32_t>(n)};
  for (int64_t o = 0; o < n; ++o) {
    float max_abs = 0.0f;
    for (int64_t i = 0; i < k; ++i) max_abs = std::max(max_abs, std::fabs(data[o * k + i]));
    const float scale = std::max(max_abs / 127.0f, 1e-8f);
    result.scales[o] = scale;
    for (int64_t i = 0; i < k; ++i) {
      const float q = std::min(127.0f, std::max(-127.0f, std::nearbyint(data[o * k + i] / scale)));
      result.q[o * k + i] = static_cast<int8_t>(q);
      result.sums[o] += static_cast<int32_t>(q);
    }
  }
  return result;
}

// y = x·Wᵀ + b with x quantized per row (asymmetric uint8 over [min(0, x),
// max(0, x)]) and W per output channel, scalar.
torch::Tensor ReferenceLinear(const torch::Tensor& x, const torch::Tensor& weight,
                              const torch::Tensor& bias) {
  const QuantizedWeight w = QuantizeWeight(weight);
  const torch::Tensor xf = x.to(torch::kFloat).contiguous();
  const int64_t m = xf.size(0), k = xf.size(1), n = weight.size(0);
  const float* x_data = xf.data_ptr<float>();
  const torch::Tensor b = bias.defined() ? bias.to(torch::kFloat).contiguous() : bias;
  torch::Tensor out = torch::empty({m, n}, torch::kFloat);
  float* out_data = out.data_ptr<float>();
  std::vector<int32_t> q(k);
  for (int64_t r = 0; r < m; ++r) {
    const float* row = x_data + r * k;
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      lo = std::min(lo, row[i]);
      hi = std::max(hi, row[i]);
    }
    float scale = (hi - lo) / 255.0f;
    if (!(scale >= amx_internal::kMinScale)) scale = amx_internal::kMinScale;
    const float inv = 1.0f / scale;
    const int32_t zero_point =
        std::clamp(static_cast<int32_t>(std::nearbyint(-lo * inv)), 0, 255);
    for (int64_t i = 0; i < k; ++i) {
      q[i] = std::clamp(static_cast<int32_t>(std::nearbyint(row[i] * inv)) + zero_point, 0, 255);
    }
    for (int64_t o = 0; o < n; ++o) {
      int64_t acc = 0;
      for (int64_t i = 0; i < k; ++i) acc += q[i] * static_cast<int64_t>(w.q[o * k + i]);
      const int64_t centered = acc - static_cast<int64_t>(zero_point) * w.sums[o];
      out_data[r * n + o] = std::fma(static_cast<float>(centered), scale * w.scales[o],
                                     b.defined() ? b.data_ptr<float>()[o] : 0.0f);
    }
  }
  return out;
}

// max |actual - expected| / max |expected|.
double RelativeMaxError(const torch::Tensor& actual, const torch::Tensor& expected) {
  const double scale = expected.abs().max().item<double>();
  return (actual.to(torch::kDouble) - expected.to(torch::kDouble)).abs().max().item<double>() /
         std::max(scale, 1e-30);
}

TEST(Int8GemmTest, PacksWeightsIntoVnniTiles) {
  torch::manual_seed(1);
  const int64_t n = 37, k = 70;
  torch::Tensor weight = torch::randn({n, k});
  weight[5].zero_();  // An all-zero channel gets the smallest scale.
  const Int8PackedWeight packed = PackInt8Weight(weight);
  const QuantizedWeight expected = QuantizeWeight(weight);
  ASSERT_EQ(packed.out_features, n);
  ASSERT_EQ(packed.in_features, k);
  ASSERT_EQ(packed.padded_out, 64);
  ASSERT_EQ(packed.padded_in, 128);
  ASSERT_EQ(packed.packed.numel(), 64 * 128);
  const int8_t* bytes = packed.packed.data_ptr<int8_t>();
  const int64_t k_tiles = packed.padded_in / 64;
  int64_t nonzero_padding = 0;
  for (int64_t o = 0; o < packed.padded_out; ++o) {
    for (int64_t i = 0; i < packed.padded_in; ++i) {
      // AMX's VNNI B tile: 16 columns x 64 k per KiB, 4 consecutive k of a column together.
      const int8_t value =
          bytes[((o / 16) * k_tiles + i / 64) * 1024 + ((i % 64) / 4) * 64 + (o % 16) * 4 + i % 4];
      if (o < n && i < k) {
        ASSERT_EQ(value, expected.q[o * k + i]) << "n " << o << " k " << i;
      } else {
        nonzero_padding += value != 0;
      }
    }
    if (o < n) {
      EXPECT_EQ(packed.scales[o].item<float>(), expected.scales[o]) << o;
      EXPECT_EQ(packed.column_sums[o].item<int32_t>(), expected.sums[o]) << o;
    } else {
      EXPECT_EQ(packed.scales[o].item<float>(), 1.0f);
      EXPECT_EQ(packed.column_sums[o].item<int32_t>(), 0);
    }
  }
  EXPECT_EQ(nonzero_padding, 0);
  EXPECT_EQ(packed.scales[5].item<float>(), 1e-8f);
}

TEST(Int8GemmTest, PackRefusesEmptyWeights) {
  EXPECT_THROW(PackInt8Weight(torch::zeros({0, 8})), c10::Error);
  EXPECT_THROW(PackInt8Weight(torch::zeros({8})), c10::Error);
}

struct Shape {
  int64_t m, n, k;
};

TEST(Int8GemmTest, MatchesScalarReferenceOfTheSameQuantization) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  torch::manual_seed(2);
  const std::vector<Shape> shapes = {{1, 1, 1},    {1, 17, 64},  {1, 40, 67},   {3, 33, 61},
                                     {16, 16, 64}, {17, 50, 63}, {32, 32, 128}, {33, 47, 190},
                                     {70, 96, 253}, {5, 31, 259}, {300, 65, 130}, {2, 3, 1000}};
  for (const Shape& s : shapes) {
    for (const bool with_bias : {false, true}) {
      torch::Tensor x = torch::randn({s.m, s.k}) * 3.0 + 0.5;
      if (s.m >= 4) {
        x[1].zero_();              // scale falls back to the minimum, zero point 0
        x[2] = x[2].abs() + 0.1;   // all positive: zero point 0
        x[3] = -x[3].abs() * 100;  // all negative, large: zero point 255
      }
      const torch::Tensor weight = torch::randn({s.n, s.k}) * 0.05;
      const torch::Tensor bias = with_bias ? torch::randn({s.n}) : torch::Tensor();
      const torch::Tensor actual = AmxInt8Linear(x, PackInt8Weight(weight), bias);
      const torch::Tensor expected = ReferenceLinear(x, weight, bias);
      ASSERT_EQ(actual.sizes(), expected.sizes());
      EXPECT_LE(RelativeMaxError(actual, expected), 1e-6)
          << "m " << s.m << " n " << s.n << " k " << s.k << " bias " << with_bias;
      // And the quantization itself is close to the fp32 Linear.
      EXPECT_LE(RelativeMaxError(actual, torch::linear(x, weight, bias)), 0.05)
          << "m " << s.m << " n " << s.n << " k " << s.k << " bias " << with_bias;
    }
  }
}

TEST(Int8GemmTest, KeepsLeadingDimensionsAndDtype) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 5, 72});
  const torch::Tensor weight = torch::randn({20, 72});
  const torch::Tensor bias = torch::randn({20});
  const Int8PackedWeight packed = PackInt8Weight(weight);
  const torch::Tensor y = AmxInt8Linear(x, packed, bias);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 20}));
  EXPECT_LE(RelativeMaxError(y.reshape({10, 20}), ReferenceLinear(x.reshape({10, 72}), weight, bias)),
            1e-6);
  const torch::Tensor y_bf16 = AmxInt8Linear(x.to(torch::kBFloat16), packed, bias);
  EXPECT_EQ(y_bf16.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(AmxInt8Linear(torch::zeros({0, 72}), packed, bias).sizes(),
            (std::vector<int64_t>{0, 20}));
  // Non-contiguous input (a transposed view).
  const torch::Tensor xt = torch::randn({72, 9}).t();
  EXPECT_LE(RelativeMaxError(AmxInt8Linear(xt, packed, bias), ReferenceLinear(xt, weight, bias)),
            1e-6);
}

// Runs `linear` on 600 rows of width k (the threads split the rows) and on 20
// (one row block: they split the columns), on one thread and on two: the same
// bits, and within max_error of `reference`.
template <typename Linear, typename Reference>
void ExpectSameOnOneAndTwoThreads(int64_t k, const Linear& linear, const Reference& reference,
                                  double max_error) {
  const int previous = at::get_num_threads();
  for (const int64_t rows : {600, 20}) {
    const torch::Tensor x = torch::randn({rows, k});
    at::set_num_threads(1);
    const torch::Tensor one = linear(x);
    at::set_num_threads(2);
    const torch::Tensor two = linear(x);
    at::set_num_threads(previous);
    EXPECT_TRUE(torch::equal(one, two)) << rows;
    EXPECT_LE(RelativeMaxError(two, reference(x)), max_error) << rows;
  }
}

TEST(Int8GemmTest, SameResultOnOneAndTwoThreads) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  torch::manual_seed(4);
  const torch::Tensor weight = torch::randn({130, 200});
  const torch::Tensor bias = torch::randn({130});
  const Int8PackedWeight packed = PackInt8Weight(weight);
  ExpectSameOnOneAndTwoThreads(
      200, [&](const torch::Tensor& x) { return AmxInt8Linear(x, packed, bias); },
      [&](const torch::Tensor& x) { return ReferenceLinear(x, weight, bias); }, 1e-6);
}

// ULPs between two floats of the same sign (their bit patterns' distance;
// subnormals count like any other step).
int64_t UlpDistance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof(ia));
  std::memcpy(&ib, &b, sizeof(ib));
  if ((ia < 0) != (ib < 0)) return (a == b) ? 0 : INT64_MAX;  // +0 vs -0 are equal
  return std::abs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

// A dense grid over [lo, hi] plus the special points.
std::vector<float> Grid(float lo, float hi, float step) {
  std::vector<float> grid;
  for (double v = lo; v <= hi; v += step) grid.push_back(static_cast<float>(v));
  for (const float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-7f, -1e-7f, 1e-45f, -1e-45f}) {
    grid.push_back(v);
  }
  return grid;
}

TEST(Int8GemmEpilogueMathTest, ErfWithin1e6OfStdErfInDouble) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  std::vector<float> x = Grid(-12.0f, 12.0f, 1.0f / 4096);
  for (const float v : {50.0f, -50.0f, 1e4f, -1e4f, 3e38f, -3e38f, INFINITY, -INFINITY}) {
    x.push_back(v);
  }
  std::vector<float> y(x.size());
  amx_internal::VectorErf(x.data(), y.data(), static_cast<int64_t>(x.size()));
  double worst = 0.0;
  float worst_x = 0.0f;
  for (size_t i = 0; i < x.size(); ++i) {
    const double error = std::fabs(y[i] - std::erf(static_cast<double>(x[i])));
    if (!(error <= worst)) {
      worst = error;
      worst_x = x[i];
    }
    // Odd: the sign follows x (erf(-0) = -0).
    if (x[i] != 0.0f) {
      EXPECT_EQ(std::signbit(y[i]), std::signbit(x[i])) << x[i];
    }
  }
  EXPECT_LE(worst, 1e-6) << "at x = " << worst_x;
  std::cout << "[ erf      ] max abs error " << worst << " at " << worst_x << "\n";
  // The tail of the vector (count not a multiple of 16) is written, nothing past it.
  float tail[20];
  for (float& v : tail) v = 7.0f;
  const float in[3] = {0.5f, -1.0f, 2.0f};
  amx_internal::VectorErf(in, tail, 3);
  EXPECT_NEAR(tail[1], std::erf(-1.0), 1e-6);
  EXPECT_EQ(tail[3], 7.0f);
  EXPECT_EQ(tail[19], 7.0f);
}

TEST(Int8GemmEpilogueMathTest, ExpAndSigmoidWithinFewUlpOfStdExpInDouble) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  // exp over all of float's range, into the subnormals and past both ends.
  std::vector<float> x = Grid(-110.0f, 95.0f, 1.0f / 1024);
  for (const float v : {1e4f, -1e4f, 3e38f, -3e38f, INFINITY, -INFINITY}) x.push_back(v);
  const int64_t count = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size());
  amx_internal::VectorExp(x.data(), y.data(), count);
  int64_t worst_exp = 0;
  float worst_exp_x = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    const float expected = static_cast<float>(std::exp(static_cast<double>(x[i])));
    const int64_t ulps = UlpDistance(y[i], expected);
    if (ulps > worst_exp) {
      worst_exp = ulps;
      worst_exp_x = x[i];
    }
  }
  EXPECT_LE(worst_exp, 2) << "at x = " << worst_exp_x;

  amx_internal::VectorSigmoid(x.data(), y.data(), count);
  int64_t worst_sigmoid = 0;
  float worst_sigmoid_x = 0.0f;
  for (int64_t i = 0; i < count; ++i) {
    const double v = x[i];
    const double exact = v >= 0 ? 1.0 / (1.0 + std::exp(-v)) : std::exp(v) / (1.0 + std::exp(v));
    const int64_t ulps = UlpDistance(y[i], static_cast<float>(exact));
    if (ulps > worst_sigmoid) {
      worst_sigmoid = ulps;
      worst_sigmoid_x = x[i];
    }
  }
  EXPECT_LE(worst_sigmoid, 4) << "at x = " << worst_sigmoid_x;
  std::cout << "[ exp      ] max " << worst_exp << " ulp at " << worst_exp_x << "\n"
            << "[ sigmoid  ] max " << worst_sigmoid << " ulp at " << worst_sigmoid_x << "\n";
}

// QuickGELU as OpenCLIP writes it: x * torch.sigmoid(1.702 * x).
torch::Tensor QuickGelu(const torch::Tensor& x) { return x * torch::sigmoid(1.702 * x); }

// Each activation the epilogue can fold in.
struct ActivationCase {
  AmxActivation activation;
  const char* name;
};
const ActivationCase kActivationCases[] = {{AmxActivation::kNone, "none"},
                                           {AmxActivation::kGelu, "gelu"},
                                           {AmxActivation::kQuickGelu, "quick_gelu"},
                                           {AmxActivation::kRelu, "relu"}};

// What the activation makes of y, as LibTorch computes it.
torch::Tensor Activated(AmxActivation activation, const torch::Tensor& y) {
  switch (activation) {
    case AmxActivation::kGelu:
      return torch::gelu(y);
    case AmxActivation::kQuickGelu:
      return QuickGelu(y);
    case AmxActivation::kRelu:
      return torch::relu(y);
    case AmxActivation::kNone:
      break;
  }
  return y;
}

// The epilogue's result for the linear result y, as the unfused ops give it.
torch::Tensor EpilogueOf(const AmxEpilogue& epilogue, const torch::Tensor& y) {
  if (!epilogue.residual.defined()) return Activated(epilogue.activation, y);
  const torch::Tensor residual = epilogue.residual.to(y.scalar_type());
  return epilogue.activation_after_residual ? Activated(epilogue.activation, y + residual)
                                            : residual + Activated(epilogue.activation, y);
}

// No residual, the transformer's residual after the activation, the ResNet's
// before it.
std::vector<AmxEpilogue> EpiloguesOf(AmxActivation activation, const torch::Tensor& residual) {
  std::vector<AmxEpilogue> epilogues(3);
  for (AmxEpilogue& epilogue : epilogues) epilogue.activation = activation;
  epilogues[1].residual = residual;
  epilogues[2].residual = residual;
  epilogues[2].activation_after_residual = true;
  return epilogues;
}

TEST(Int8GemmTest, FusedEpilogueMatchesUnfusedKernelThenActivationAndResidual) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  torch::manual_seed(5);
  // M = 1, M and N off the 32 blocks, a wide N, and 300 rows (the row split
  // over threads, not the column split).
  const std::vector<Shape> shapes = {{1, 1, 16},   {1, 50, 64},   {17, 33, 70},
                                     {45, 77, 130}, {300, 65, 96}, {33, 200, 48}};
  for (const Shape& s : shapes) {
    // Wide inputs, so that GELU and QuickGELU see their whole range (|y| up to ~10).
    const torch::Tensor x = torch::randn({s.m, s.k}) * 4.0;
    const torch::Tensor weight = torch::randn({s.n, s.k}) * (1.0 / std::sqrt(s.k));
    const torch::Tensor bias = torch::randn({s.n});
    const torch::Tensor residual = torch::randn({s.m, s.n}) * 3.0;
    const Int8PackedWeight packed = PackInt8Weight(weight);
    const torch::Tensor y = AmxInt8Linear(x, packed, bias);
    for (const ActivationCase& c : kActivationCases) {
      for (const AmxEpilogue& epilogue : EpiloguesOf(c.activation, residual)) {
        const torch::Tensor fused = AmxInt8Linear(x, packed, bias, epilogue);
        const torch::Tensor expected = EpilogueOf(epilogue, y);
        ASSERT_EQ(fused.sizes(), expected.sizes());
        const double error = (fused - expected).abs().max().item<double>();
        EXPECT_LE(error, 1e-5) << "m " << s.m << " n " << s.n << " k " << s.k << " " << c.name
                               << " residual " << epilogue.residual.defined() << " before "
                               << epilogue.activation_after_residual;
      }
    }
  }
}

TEST(Int8GemmTest, FusedResidualKeepsLeadingDimensionsAndIsChecked) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  torch::manual_seed(6);
  const torch::Tensor x = torch::randn({2, 5, 72});
  const Int8PackedWeight packed = PackInt8Weight(torch::randn({20, 72}));
  const torch::Tensor bias = torch::randn({20});
  // A non-contiguous residual of the output's shape (a transposed view).
  const torch::Tensor residual = torch::randn({20, 5, 2}).permute({2, 1, 0});
  AmxEpilogue epilogue;
  epilogue.activation = AmxActivation::kGelu;
  epilogue.residual = residual;
  const torch::Tensor fused = AmxInt8Linear(x, packed, bias, epilogue);
  ASSERT_EQ(fused.sizes(), (std::vector<int64_t>{2, 5, 20}));
  EXPECT_LE((fused - (residual + torch::gelu(AmxInt8Linear(x, packed, bias)))).abs().max().item<double>(),
            1e-5);
  epilogue.residual = torch::randn({10, 20});  // same elements, other shape
  EXPECT_THROW(AmxInt8Linear(x, packed, bias, epilogue), c10::Error);
  epilogue.residual = torch::randn({2, 5, 21});
  EXPECT_THROW(AmxInt8Linear(x, packed, bias, epilogue), c10::Error);
}

TEST(Int8GemmTest, LayerNormFusedIntoQuantizationMatchesLayerNormThenQuantization) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  torch::manual_seed(8);
  for (const Shape& s : std::vector<Shape>{{1, 8, 16}, {37, 20, 70}, {64, 33, 768}}) {
    const int64_t k_padded = (s.k + 63) / 64 * 64, m_padded = (s.m + 31) / 32 * 32;
    // Rows with an offset and a spread of their own, as the residual stream has.
    const torch::Tensor x = torch::randn({s.m, s.k}) * (torch::rand({s.m, 1}) * 5 + 0.1) +
                            torch::randn({s.m, 1}) * 3;
    const torch::Tensor gamma = torch::randn({s.k});
    const torch::Tensor beta = torch::randn({s.k}) * 0.5;
    const torch::Tensor normalized = torch::layer_norm(x, {s.k}, gamma, beta, 1e-5).contiguous();
    // The quantizer alone: the same bytes, scales and zero points as quantizing
    // torch::layer_norm's output, but for float rounding (a byte off by one
    // where LayerNorm's last bit moved a value across a rounding boundary).
    std::vector<uint8_t> fused_a(m_padded * k_padded), expected_a(m_padded * k_padded);
    std::vector<float> fused_scales(s.m), expected_scales(s.m);
    std::vector<int32_t> fused_zero(s.m), expected_zero(s.m);
    const amx_internal::RowLayerNorm norm{gamma.data_ptr<float>(), beta.data_ptr<float>(),
                                                1e-5f};
    amx_internal::QuantizeRowsToTiles(x.data_ptr<float>(), s.m, s.k, k_padded, 0, m_padded,
                                            fused_a.data(), fused_scales.data(),
                                            fused_zero.data(), &norm);
    amx_internal::QuantizeRowsToTiles(normalized.data_ptr<float>(), s.m, s.k, k_padded, 0,
                                            m_padded, expected_a.data(), expected_scales.data(),
                                            expected_zero.data());
    int64_t off_by_one = 0;
    for (size_t i = 0; i < fused_a.size(); ++i) {
      const int difference = std::abs(fused_a[i] - expected_a[i]);
      ASSERT_LE(difference, 1) << "byte " << i;
      off_by_one += difference;
    }
    EXPECT_LE(off_by_one, std::max<int64_t>(1, s.m * s.k / 1000)) << "m " << s.m << " k " << s.k;
    for (int64_t r = 0; r < s.m; ++r) {
      EXPECT_NEAR(fused_scales[r], expected_scales[r], 1e-5 * expected_scales[r]) << r;
      EXPECT_LE(std::abs(fused_zero[r] - expected_zero[r]), 1) << r;
    }
    // The whole Linear, with the MLP's GELU and a residual as c_fc / c_proj
    // use it: within a few quantization steps of LayerNorm then the kernel.
    const torch::Tensor weight = torch::randn({s.n, s.k}) * (1.0 / std::sqrt(s.k));
    const torch::Tensor bias = torch::randn({s.n});
    const Int8PackedWeight packed = PackInt8Weight(weight);
    AmxEpilogue epilogue;
    epilogue.activation = AmxActivation::kGelu;
    epilogue.residual = torch::randn({s.m, s.n});
    const torch::Tensor fused =
        AmxInt8Linear(x, packed, bias, epilogue, AmxInputLayerNorm{gamma, beta, 1e-5});
    const torch::Tensor expected = AmxInt8Linear(normalized, packed, bias, epilogue);
    // (A byte off by one moves an output by one activation step times one weight.)
    EXPECT_LE(RelativeMaxError(fused, expected), 5e-3) << "m " << s.m << " k " << s.k;
    EXPECT_LE(RelativeMaxError(fused, epilogue.residual +
                                          torch::gelu(torch::linear(normalized, weight, bias))),
              0.05)
        << "m " << s.m << " k " << s.k;
  }
  const Int8PackedWeight packed = PackInt8Weight(torch::randn({4, 16}));
  EXPECT_THROW(AmxInt8Linear(torch::randn({2, 16}), packed, torch::Tensor(), {},
                             AmxInputLayerNorm{torch::ones({15}), torch::zeros({15}), 1e-5}),
               c10::Error);
  EXPECT_THROW(AmxInt8Linear(torch::randn({2, 16}), packed, torch::Tensor(), {},
                             AmxInputLayerNorm{torch::ones({16}), torch::Tensor(), 1e-5}),
               c10::Error);
}

TEST(Int8GemmTest, RefusesMismatchedShapes) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  const Int8PackedWeight packed = PackInt8Weight(torch::randn({8, 16}));
  EXPECT_THROW(AmxInt8Linear(torch::randn({4, 15}), packed, torch::Tensor()), c10::Error);
  EXPECT_THROW(AmxInt8Linear(torch::randn({4, 16}), packed, torch::randn({7})), c10::Error);
}

// ---- fp32 as bf16x3 ----

constexpr char kNoAmxBf16[] =
    "this CPU (or kernel) offers no AMX-BF16 with AVX512-BF16: the bf16x3 GEMM is not run here";

// The fp32 Linear computed in double: what bf16x3 is held to.
torch::Tensor DoubleLinear(const torch::Tensor& x, const torch::Tensor& weight,
                           const torch::Tensor& bias) {
  return torch::linear(x.to(torch::kDouble), weight.to(torch::kDouble),
                       bias.defined() ? bias.to(torch::kDouble) : bias);
}

// A bfloat16's value (its bits are a float's top half).
float Bf16Value(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

TEST(Bf16x3GemmTest, PacksHiAndLoBfloat16IntoVnniTiles) {
  torch::manual_seed(11);
  const int64_t n = 37, k = 70;
  torch::Tensor weight = torch::randn({n, k});
  weight[3] *= 1e-30;  // tiny values keep their relative precision
  weight[4] = weight[4].to(torch::kBFloat16).to(torch::kFloat);  // exact in bf16: lo is 0
  const Bf16x3PackedWeight packed = PackBf16x3Weight(weight);
  ASSERT_EQ(packed.out_features, n);
  ASSERT_EQ(packed.in_features, k);
  ASSERT_EQ(packed.padded_out, 64);
  ASSERT_EQ(packed.padded_in, 96);
  ASSERT_EQ(packed.packed.numel(), 64 * 96 * 2);
  const auto* bits = reinterpret_cast<const uint16_t*>(packed.packed.data_ptr<int16_t>());
  const torch::Tensor hi_expected = weight.to(torch::kBFloat16);
  const int64_t k_tiles = packed.padded_in / 32;
  int64_t nonzero_padding = 0;
  for (int64_t o = 0; o < packed.padded_out; ++o) {
    for (int64_t i = 0; i < packed.padded_in; ++i) {
      // 16 columns x 32 k per KiB, 2 consecutive k of a column together; a
      // strip's hi tiles, then its lo tiles.
      const int64_t offset = ((o / 16) * 2 * k_tiles + i / 32) * 512 + ((i % 32) / 2) * 32 +
                             (o % 16) * 2 + i % 2;
      const uint16_t hi = bits[offset];
      const uint16_t lo = bits[offset + k_tiles * 512];
      if (o < n && i < k) {
        const float w = weight[o][i].item<float>();
        ASSERT_EQ(Bf16Value(hi), hi_expected[o][i].item<float>()) << "n " << o << " k " << i;
        // hi + lo carries 16 significant bits of w.
        ASSERT_LE(std::fabs(static_cast<double>(Bf16Value(hi)) + Bf16Value(lo) - w),
                  std::ldexp(std::fabs(w), -16))
            << "n " << o << " k " << i;
        if (o == 4) {
          ASSERT_EQ(lo, 0) << i;
        }
      } else {
        nonzero_padding += (hi != 0) + (lo != 0);
      }
    }
  }
  EXPECT_EQ(nonzero_padding, 0);
  EXPECT_THROW(PackBf16x3Weight(torch::zeros({0, 8})), c10::Error);
  EXPECT_THROW(PackBf16x3Weight(torch::zeros({8})), c10::Error);
}

TEST(Bf16x3GemmTest, WithinAFewMillionthsOfTheLinearInDouble) {
  if (!AmxBf16Available()) GTEST_SKIP() << kNoAmxBf16;
  torch::manual_seed(12);
  const std::vector<Shape> shapes = {{1, 1, 1},     {1, 17, 32},   {1, 40, 67},  {3, 33, 61},
                                     {16, 16, 32},  {17, 50, 63},  {32, 32, 128}, {33, 47, 190},
                                     {70, 96, 253}, {300, 65, 130}, {2, 3, 1000}, {64, 768, 768}};
  for (const Shape& s : shapes) {
    for (const bool with_bias : {false, true}) {
      // Rows of very different magnitudes: each value's split is its own.
      const torch::Tensor x =
          torch::randn({s.m, s.k}) * torch::pow(10.0, torch::randint(-3, 4, {s.m, 1}));
      const torch::Tensor weight = torch::randn({s.n, s.k}) * (1.0 / std::sqrt(s.k));
      const torch::Tensor bias = with_bias ? torch::randn({s.n}) : torch::Tensor();
      const torch::Tensor actual = AmxBf16x3Linear(x, PackBf16x3Weight(weight), bias);
      const torch::Tensor expected = DoubleLinear(x, weight, bias);
      ASSERT_EQ(actual.sizes(), expected.sizes());
      ASSERT_EQ(actual.scalar_type(), torch::kFloat);
      // Row by row, since the rows' scales differ by up to 10^6.
      for (int64_t r = 0; r < s.m; ++r) {
        ASSERT_LE(RelativeMaxError(actual[r], expected[r]), 2e-5)
            << "m " << s.m << " n " << s.n << " k " << s.k << " bias " << with_bias << " row " << r;
      }
    }
  }
  // One bfloat16 product alone would be ~100x off that bound: the bound tests the split.
  const torch::Tensor x = torch::randn({64, 256});
  const torch::Tensor weight = torch::randn({64, 256});
  const torch::Tensor bf16 = torch::linear(x.to(torch::kBFloat16).to(torch::kFloat),
                                           weight.to(torch::kBFloat16).to(torch::kFloat));
  EXPECT_GT(RelativeMaxError(bf16, DoubleLinear(x, weight, torch::Tensor())), 2e-4);
}

TEST(Bf16x3GemmTest, FusedLayerNormActivationAndResidualMatchTheOpsInDouble) {
  if (!AmxBf16Available()) GTEST_SKIP() << kNoAmxBf16;
  torch::manual_seed(13);
  const std::vector<Shape> shapes = {{1, 8, 16}, {17, 33, 70}, {45, 77, 130}, {300, 65, 96},
                                     {64, 200, 768}};
  for (const Shape& s : shapes) {
    // Rows with an offset and a spread of their own, as the residual stream has.
    const torch::Tensor x = torch::randn({s.m, s.k}) * (torch::rand({s.m, 1}) * 5 + 0.1) +
                            torch::randn({s.m, 1}) * 3;
    const torch::Tensor gamma = torch::randn({s.k});
    const torch::Tensor beta = torch::randn({s.k}) * 0.5;
    const torch::Tensor weight = torch::randn({s.n, s.k}) * (2.0 / std::sqrt(s.k));
    const torch::Tensor bias = torch::randn({s.n});
    const torch::Tensor residual = torch::randn({s.m, s.n}) * 3.0;
    const Bf16x3PackedWeight packed = PackBf16x3Weight(weight);
    const torch::Tensor normalized =
        torch::layer_norm(x.to(torch::kDouble), {s.k}, gamma.to(torch::kDouble),
                          beta.to(torch::kDouble), 1e-5);
    const torch::Tensor y = DoubleLinear(normalized, weight, bias);
    for (const ActivationCase& c : kActivationCases) {
      for (const AmxEpilogue& epilogue : EpiloguesOf(c.activation, residual)) {
        const torch::Tensor fused =
            AmxBf16x3Linear(x, packed, bias, epilogue, AmxInputLayerNorm{gamma, beta, 1e-5});
        const torch::Tensor expected = EpilogueOf(epilogue, y);
        ASSERT_EQ(fused.sizes(), expected.sizes());
        EXPECT_LE(RelativeMaxError(fused, expected), 2e-5)
            << "m " << s.m << " n " << s.n << " k " << s.k << " " << c.name << " residual "
            << epilogue.residual.defined() << " before " << epilogue.activation_after_residual;
      }
    }
  }
}

TEST(Bf16x3GemmTest, KeepsShapesAndDtypeSameOnOneAndTwoThreadsAndChecksArguments) {
  if (!AmxBf16Available()) GTEST_SKIP() << kNoAmxBf16;
  torch::manual_seed(14);
  const torch::Tensor weight = torch::randn({130, 200});
  const torch::Tensor bias = torch::randn({130});
  const Bf16x3PackedWeight packed = PackBf16x3Weight(weight);
  ExpectSameOnOneAndTwoThreads(
      200, [&](const torch::Tensor& x) { return AmxBf16x3Linear(x, packed, bias); },
      [&](const torch::Tensor& x) { return DoubleLinear(x, weight, bias); }, 2e-5);
  const torch::Tensor x = torch::randn({2, 5, 200});
  const torch::Tensor y = AmxBf16x3Linear(x.to(torch::kBFloat16), packed, bias);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 130}));
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(AmxBf16x3Linear(torch::zeros({0, 200}), packed, bias).sizes(),
            (std::vector<int64_t>{0, 130}));
  const torch::Tensor xt = torch::randn({200, 9}).t();  // non-contiguous
  EXPECT_LE(RelativeMaxError(AmxBf16x3Linear(xt, packed, bias), DoubleLinear(xt, weight, bias)),
            2e-5);
  EXPECT_THROW(AmxBf16x3Linear(torch::randn({4, 199}), packed, bias), c10::Error);
  EXPECT_THROW(AmxBf16x3Linear(torch::randn({4, 200}), packed, torch::randn({7})), c10::Error);
  AmxEpilogue epilogue;
  epilogue.residual = torch::randn({4, 131});
  EXPECT_THROW(AmxBf16x3Linear(torch::randn({4, 200}), packed, bias, epilogue), c10::Error);
  EXPECT_THROW(AmxBf16x3Linear(torch::randn({4, 200}), packed, bias, {},
                               AmxInputLayerNorm{torch::ones({199}), torch::zeros({199}), 1e-5}),
               c10::Error);
}

TEST(Bf16x3GemmTest, Conv3x3WithinAFewMillionthsOfTheConvolutionInDouble) {
  if (!AmxBf16Available()) GTEST_SKIP() << kNoAmxBf16;
  torch::manual_seed(15);
  struct ConvShape {
    int64_t batch, channels, height, width, out;
  };
  // Channels a multiple of 32 and not (padded per tap), one-pixel images
  // (every neighbour outside), rows off the 32-row blocks.
  const std::vector<ConvShape> shapes = {
      {2, 32, 5, 7, 40}, {1, 8, 3, 3, 16}, {3, 70, 6, 6, 33}, {1, 64, 1, 1, 8}, {2, 16, 9, 4, 64}};
  for (const ConvShape& c : shapes) {
    const torch::Tensor weight =
        torch::randn({c.out, c.channels, 3, 3}) * (1.0 / std::sqrt(9.0 * c.channels));
    const Bf16x3PackedWeight packed = PackBf16x3Conv3x3Weight(weight);
    EXPECT_EQ(packed.in_features, 9 * ((c.channels + 31) / 32 * 32));
    for (const bool with_bias : {false, true}) {
      for (const bool channels_last : {false, true}) {
        const torch::Tensor bias = with_bias ? torch::randn({c.out}) : torch::Tensor();
        torch::Tensor x = torch::randn({c.batch, c.channels, c.height, c.width}) * 2.0;
        if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        const torch::Tensor y = AmxBf16x3Conv3x3(x, packed, bias);
        const torch::Tensor expected =
            torch::conv2d(x.to(torch::kDouble), weight.to(torch::kDouble),
                          with_bias ? bias.to(torch::kDouble) : torch::Tensor(), 1, 1);
        ASSERT_EQ(y.sizes(), expected.sizes());
        EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
        EXPECT_LE(RelativeMaxError(y, expected), 2e-5)
            << c.batch << "x" << c.channels << "x" << c.height << "x" << c.width << " -> " << c.out
            << " bias " << with_bias << " channels_last " << channels_last;
        // The ResNet's relu(conv(x) + identity), the identity in either layout.
        torch::Tensor identity = torch::randn(expected.sizes()) * 2.0;
        if (!channels_last) identity = identity.contiguous(at::MemoryFormat::ChannelsLast);
        for (const AmxEpilogue& epilogue : EpiloguesOf(AmxActivation::kRelu, identity)) {
          EXPECT_LE(RelativeMaxError(AmxBf16x3Conv3x3(x, packed, bias, epilogue),
                                     EpilogueOf(epilogue, expected)),
                    2e-5)
              << c.batch << "x" << c.channels << "x" << c.height << "x" << c.width << " -> "
              << c.out << " relu, residual " << epilogue.residual.defined() << " before "
              << epilogue.activation_after_residual;
        }
      }
    }
  }
  const Bf16x3PackedWeight packed = PackBf16x3Conv3x3Weight(torch::randn({8, 32, 3, 3}));
  AmxEpilogue wrong_residual;
  wrong_residual.residual = torch::randn({1, 8, 4, 5});
  EXPECT_THROW(AmxBf16x3Conv3x3(torch::randn({1, 32, 4, 4}), packed, torch::Tensor(),
                                wrong_residual),
               c10::Error);
  EXPECT_THROW(AmxBf16x3Conv3x3(torch::randn({1, 33, 4, 4}), packed, torch::Tensor()), c10::Error);
  EXPECT_THROW(AmxBf16x3Conv3x3(torch::randn({1, 32, 4, 4}), packed, torch::randn({7})),
               c10::Error);
  EXPECT_THROW(PackBf16x3Conv3x3Weight(torch::randn({8, 32, 1, 1})), c10::Error);
}

}  // namespace
}  // namespace oclip::testing
