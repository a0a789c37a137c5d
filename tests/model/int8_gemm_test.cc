// The AMX int8 Linear (model/int8_gemm.h) against a scalar reference of the
// same quantization arithmetic written here: int32 accumulation is exact and
// the fp32 epilogue is the same fma, so the two agree to float rounding.
// Shapes cover tile remainders in M, N and K, M = 1, K around multiples of 64,
// with and without bias; the fused epilogue (GELU, QuickGELU, residual)
// against the unfused kernel followed by LibTorch's ops, the fused input
// LayerNorm against torch::layer_norm before the kernel, and the epilogue's
// vectorized erf / exp / sigmoid against std:: in double. The weight packing
// runs (and is tested) without AMX; the GEMM and epilogue tests skip, saying
// so, on a CPU without AMX-INT8.

#include "model/int8_gemm.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <vector>

#include "model/int8_gemm_amx.h"

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
    if (!(scale >= int8_gemm_internal::kMinScale)) scale = int8_gemm_internal::kMinScale;
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

TEST(Int8GemmTest, SameResultOnOneAndTwoThreads) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  torch::manual_seed(4);
  const torch::Tensor weight = torch::randn({130, 200});
  const torch::Tensor bias = torch::randn({130});
  const Int8PackedWeight packed = PackInt8Weight(weight);
  const int previous = at::get_num_threads();
  // 600 rows: the threads split the rows; 20 rows (one row block): the columns.
  for (const int64_t rows : {600, 20}) {
    const torch::Tensor x = torch::randn({rows, 200});
    at::set_num_threads(1);
    const torch::Tensor one = AmxInt8Linear(x, packed, bias);
    at::set_num_threads(2);
    const torch::Tensor two = AmxInt8Linear(x, packed, bias);
    at::set_num_threads(previous);
    EXPECT_TRUE(torch::equal(one, two)) << rows;
    EXPECT_LE(RelativeMaxError(two, ReferenceLinear(x, weight, bias)), 1e-6) << rows;
  }
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
  int8_gemm_internal::VectorErf(x.data(), y.data(), static_cast<int64_t>(x.size()));
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
  int8_gemm_internal::VectorErf(in, tail, 3);
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
  int8_gemm_internal::VectorExp(x.data(), y.data(), count);
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

  int8_gemm_internal::VectorSigmoid(x.data(), y.data(), count);
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
    struct Case {
      Int8Activation activation;
      torch::Tensor expected;
      const char* name;
    };
    const std::vector<Case> cases = {{Int8Activation::kNone, y, "none"},
                                     {Int8Activation::kGelu, torch::gelu(y), "gelu"},
                                     {Int8Activation::kQuickGelu, QuickGelu(y), "quick_gelu"}};
    for (const Case& c : cases) {
      for (const bool with_residual : {false, true}) {
        Int8Epilogue epilogue;
        epilogue.activation = c.activation;
        if (with_residual) epilogue.residual = residual;
        const torch::Tensor fused = AmxInt8Linear(x, packed, bias, epilogue);
        const torch::Tensor expected = with_residual ? residual + c.expected : c.expected;
        ASSERT_EQ(fused.sizes(), expected.sizes());
        const double error = (fused - expected).abs().max().item<double>();
        EXPECT_LE(error, 1e-5) << "m " << s.m << " n " << s.n << " k " << s.k << " "
                               << c.name << " residual " << with_residual;
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
  Int8Epilogue epilogue;
  epilogue.activation = Int8Activation::kGelu;
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
    const int8_gemm_internal::RowLayerNorm norm{gamma.data_ptr<float>(), beta.data_ptr<float>(),
                                                1e-5f};
    int8_gemm_internal::QuantizeRowsToTiles(x.data_ptr<float>(), s.m, s.k, k_padded, 0, m_padded,
                                            fused_a.data(), fused_scales.data(),
                                            fused_zero.data(), &norm);
    int8_gemm_internal::QuantizeRowsToTiles(normalized.data_ptr<float>(), s.m, s.k, k_padded, 0,
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
    Int8Epilogue epilogue;
    epilogue.activation = Int8Activation::kGelu;
    epilogue.residual = torch::randn({s.m, s.n});
    const torch::Tensor fused =
        AmxInt8Linear(x, packed, bias, epilogue, Int8InputLayerNorm{gamma, beta, 1e-5});
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
                             Int8InputLayerNorm{torch::ones({15}), torch::zeros({15}), 1e-5}),
               c10::Error);
  EXPECT_THROW(AmxInt8Linear(torch::randn({2, 16}), packed, torch::Tensor(), {},
                             Int8InputLayerNorm{torch::ones({16}), torch::Tensor(), 1e-5}),
               c10::Error);
}

TEST(Int8GemmTest, RefusesMismatchedShapes) {
  if (!AmxInt8Available()) GTEST_SKIP() << kNoAmx;
  const Int8PackedWeight packed = PackInt8Weight(torch::randn({8, 16}));
  EXPECT_THROW(AmxInt8Linear(torch::randn({4, 15}), packed, torch::Tensor()), c10::Error);
  EXPECT_THROW(AmxInt8Linear(torch::randn({4, 16}), packed, torch::randn({7})), c10::Error);
}

}  // namespace
}  // namespace oclip::testing
