// TryAddReluBf16InPlace (model/bf16_relu.h) against LibTorch's own bf16
// relu(y + residual) and relu(y): bit for bit up to the sign of a zero, on
// channels-last activations with tails that are not whole vectors, sizes that
// split over threads, ties of the bf16 rounding, NaN, infinities and
// subnormals; and the cases it must decline, leaving y untouched. Skips the
// numeric checks, saying so, without AVX-512.

#include "model/bf16_relu.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "model/amx_linear.h"

namespace oclip::testing {
namespace {

constexpr char kNoAvx512[] = "this CPU offers no AVX-512: the bf16 ReLU kernel is not run here";

// Random bf16 activations [n, c, h, w], channels-last, with special values
// sprinkled over them.
torch::Tensor Activations(int64_t n, int64_t c, int64_t h, int64_t w, double scale) {
  torch::Tensor x = (torch::randn({n, c, h, w}) * scale).to(torch::kBFloat16);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            -0.0f,
                            0.0f,
                            -1e-40f,  // a subnormal
                            1e-40f};
  torch::Tensor flat = x.view({-1});
  for (int64_t i = 0; i < 8 && i * 37 < flat.numel(); ++i) flat[i * 37] = specials[i];
  return x.contiguous(at::MemoryFormat::ChannelsLast);
}

// Equal as floats, NaN equal to NaN, a zero equal to either zero.
void ExpectSameValues(const torch::Tensor& actual, const torch::Tensor& expected,
                      const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const torch::Tensor a = actual.to(torch::kFloat).contiguous();
  const torch::Tensor e = expected.to(torch::kFloat).contiguous();
  const torch::Tensor same = (a == e) | (torch::isnan(a) & torch::isnan(e));
  EXPECT_TRUE(same.all().item<bool>())
      << what << ": " << (~same).sum().item<int64_t>() << " of " << a.numel() << " differ";
}

TEST(Bf16ReluTest, AddReluMatchesLibTorchBitForBit) {
  if (!Avx512Available()) GTEST_SKIP() << kNoAvx512;
  torch::manual_seed(21);
  torch::InferenceMode inference;
  struct Size {
    int64_t n, c, h, w;
  };
  // A few elements, tails off 16 and 32, and 200,704 elements (several tasks).
  for (const Size& s : std::vector<Size>{{1, 3, 1, 1}, {2, 7, 5, 3}, {1, 33, 1, 1}, {4, 64, 28, 28}}) {
    const torch::Tensor y = Activations(s.n, s.c, s.h, s.w, 3.0);
    const torch::Tensor residual = Activations(s.n, s.c, s.h, s.w, 2.0);
    const torch::Tensor expected = torch::relu(y + residual);
    torch::Tensor actual = y.clone();
    ASSERT_TRUE(TryAddReluBf16InPlace(actual, residual));
    ExpectSameValues(actual, expected, "relu(y + residual) " + std::to_string(y.numel()));

    torch::Tensor relu_only = y.clone();
    ASSERT_TRUE(TryAddReluBf16InPlace(relu_only, torch::Tensor()));
    ExpectSameValues(relu_only, torch::relu(y), "relu(y) " + std::to_string(y.numel()));
  }
}

TEST(Bf16ReluTest, RoundsSumsToNearestEvenAsLibTorch) {
  if (!Avx512Available()) GTEST_SKIP() << kNoAvx512;
  torch::InferenceMode inference;
  // 1 + 2^-8 is exactly halfway between two bf16 (8 bits of mantissa): a tie,
  // rounded to the even neighbour 1; 1 + 3 * 2^-8 rounds up to 1 + 2^-6.
  const torch::Tensor y = torch::full({1, 2, 1, 1}, 1.0).to(torch::kBFloat16);
  torch::Tensor residual = torch::tensor({0.00390625f, 0.01171875f})
                               .view({1, 2, 1, 1})
                               .to(torch::kBFloat16);
  torch::Tensor actual = y.clone();
  ASSERT_TRUE(TryAddReluBf16InPlace(actual, residual));
  ExpectSameValues(actual, torch::relu(y + residual), "ties");
  EXPECT_EQ(actual.view({-1})[0].item<float>(), 1.0f);
}

TEST(Bf16ReluTest, DeclinesWhatItCannotComputeAndLeavesYUntouched) {
  torch::manual_seed(22);
  torch::InferenceMode inference;
  const torch::Tensor y = Activations(2, 8, 4, 4, 1.0);
  const auto declines = [&](torch::Tensor candidate, const torch::Tensor& residual,
                            const char* what) {
    const torch::Tensor before = candidate.clone();
    EXPECT_FALSE(TryAddReluBf16InPlace(candidate, residual)) << what;
    ExpectSameValues(candidate, before, what);
  };
  declines(y.to(torch::kFloat), torch::Tensor(), "fp32 y");
  declines(y.clone(), y.to(torch::kFloat), "fp32 residual");
  declines(y.clone(), y.contiguous(), "residual in another layout");
  declines(y.clone(), Activations(2, 8, 4, 5, 1.0), "residual of another shape");
  torch::Tensor wide = Activations(2, 8, 4, 8, 1.0);
  declines(wide.slice(3, 0, 8, 2), torch::Tensor(), "strided y");
  if (!Avx512Available()) declines(y.clone(), torch::Tensor(), "no AVX-512");
}

}  // namespace
}  // namespace oclip::testing
