// CpuAttention (model/cpu_attention.h) against LibTorch's composition
// (matmul, softmax, matmul) computed in double: ViT, text (causal mask) and
// RoBERTa (padding mask) shapes, head sizes that are not multiples of 16,
// strided q/k/v as the packed in_proj produces them, masked keys, and the
// cases it must decline (outside InferenceMode, other dtypes). The bf16
// kernel (AttentionPrecision::kBf16) is checked against the same composition
// on bf16-rounded operands, which it must match to fp32 accumulation order.
// Skips, saying so, without AVX-512 (the bf16 tests without AMX-BF16).

#include "model/cpu_attention.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>

#include "model/amx_linear.h"

namespace oclip::testing {
namespace {

constexpr char kNoAvx512[] = "this CPU offers no AVX-512: the attention kernel is not run here";
constexpr char kNoAmxBf16[] =
    "this CPU offers no AMX-BF16: the bf16 attention kernel is not run here";

// The composition in double: the reference the kernel must match.
torch::Tensor ReferenceAttention(const torch::Tensor& q, const torch::Tensor& k,
                                 const torch::Tensor& v, const torch::Tensor& mask) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor scores =
      torch::matmul(q.to(torch::kDouble) * scale, k.to(torch::kDouble).transpose(-2, -1));
  if (mask.defined()) scores = scores + mask.to(torch::kDouble);
  return torch::matmul(torch::softmax(scores, -1), v.to(torch::kDouble));
}

// What the bf16 kernel computes, in double: q * scale (in fp32), k, the
// probabilities (in fp32) and v rounded to bfloat16, everything else exact.
torch::Tensor ReferenceBf16Attention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v, const torch::Tensor& mask) {
  const auto bf16 = [](const torch::Tensor& t) {
    return t.to(torch::kFloat).to(torch::kBFloat16).to(torch::kDouble);
  };
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  torch::Tensor scores = torch::matmul(bf16(q * scale), bf16(k).transpose(-2, -1));
  if (mask.defined()) scores = scores + mask.to(torch::kDouble);
  return torch::matmul(bf16(torch::softmax(scores, -1)), bf16(v));
}

// max |got - want| over max |want|.
double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kDouble) - want).abs().max().item<double>() /
         want.abs().max().item<double>();
}

// q, k, v as MultiheadAttention's packed in_proj gives them: views of one
// [N, L, 3, H, D] tensor, permuted to [N, H, L, D] (rows 3 H D floats apart).
struct PackedQkv {
  torch::Tensor q, k, v;
};
PackedQkv MakePackedQkv(int64_t batch, int64_t heads, int64_t length, int64_t dim) {
  const torch::Tensor qkv =
      torch::randn({batch, length, 3, heads, dim}).permute({2, 0, 3, 1, 4});
  return {qkv[0], qkv[1], qkv[2]};
}

class CpuAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Avx512Available()) GTEST_SKIP() << kNoAvx512;
    torch::manual_seed(3);
  }
  // The kernel runs under InferenceMode only; the tests' reference runs in it too.
  c10::InferenceMode inference_;
};

TEST_F(CpuAttentionTest, MatchesTheCompositionWithoutMask) {
  // ViT-B-32 (50 tokens, 64 per head), ViT-H (80 per head), tiny and odd sizes.
  const int64_t shapes[][4] = {{2, 12, 50, 64}, {1, 16, 50, 80}, {3, 2, 1, 24},
                               {1, 3, 17, 7},   {2, 1, 33, 104}, {1, 2, 70, 64}};
  for (const auto& s : shapes) {
    const PackedQkv qkv = MakePackedQkv(s[0], s[1], s[2], s[3]);
    ASSERT_TRUE(CpuAttentionApplies(qkv.q, qkv.k, qkv.v, torch::Tensor()));
    const torch::Tensor got = CpuAttention(qkv.q, qkv.k, qkv.v, torch::Tensor());
    ASSERT_EQ(got.sizes(), qkv.q.sizes());
    EXPECT_LT(RelativeError(got, ReferenceAttention(qkv.q, qkv.k, qkv.v, torch::Tensor())), 1e-6)
        << "shape " << s[0] << "x" << s[1] << "x" << s[2] << "x" << s[3];
  }
}

TEST_F(CpuAttentionTest, MergingTheHeadsIsAView) {
  const PackedQkv qkv = MakePackedQkv(2, 4, 9, 16);
  const torch::Tensor merged = CpuAttention(qkv.q, qkv.k, qkv.v, torch::Tensor()).transpose(1, 2);
  EXPECT_TRUE(merged.is_contiguous());
}

TEST_F(CpuAttentionTest, CausalMaskAsTheTextTowerBuildsIt) {
  for (const int64_t length : {77, 12, 5}) {
    const PackedQkv qkv = MakePackedQkv(2, 8, length, 64);
    const torch::Tensor mask = torch::full({length, length}, -std::numeric_limits<float>::infinity())
                                   .triu(1);
    ASSERT_TRUE(CpuAttentionApplies(qkv.q, qkv.k, qkv.v, mask));
    const torch::Tensor got = CpuAttention(qkv.q, qkv.k, qkv.v, mask);
    EXPECT_LT(RelativeError(got, ReferenceAttention(qkv.q, qkv.k, qkv.v, mask)), 1e-6)
        << "length " << length;
    // The first query sees only the first key: its output is that key's value.
    EXPECT_TRUE(torch::allclose(got.select(2, 0), qkv.v.select(2, 0), 0.0, 0.0));
  }
}

TEST_F(CpuAttentionTest, PaddingMaskPerSequence) {
  // RoBERTa's additive mask [N, 1, 1, S]: 0 for real tokens, a large negative
  // number for padding.
  const PackedQkv qkv = MakePackedQkv(3, 4, 21, 64);
  torch::Tensor mask = torch::zeros({3, 1, 1, 21});
  mask.index_put_({1, 0, 0, torch::indexing::Slice(15, torch::indexing::None)},
                  std::numeric_limits<float>::lowest());
  mask.index_put_({2, 0, 0, torch::indexing::Slice(3, torch::indexing::None)}, -1e4f);
  ASSERT_TRUE(CpuAttentionApplies(qkv.q, qkv.k, qkv.v, mask));
  EXPECT_LT(RelativeError(CpuAttention(qkv.q, qkv.k, qkv.v, mask),
                          ReferenceAttention(qkv.q, qkv.k, qkv.v, mask)),
            1e-6);
}

TEST_F(CpuAttentionTest, OneQueryOverManyKeys) {
  // The ResNet's attention pool: only the mean token asks.
  const torch::Tensor q = torch::randn({4, 32, 1, 64});
  const torch::Tensor k = torch::randn({4, 50, 32, 64}).transpose(1, 2);
  const torch::Tensor v = torch::randn({4, 50, 32, 64}).transpose(1, 2);
  EXPECT_LT(RelativeError(CpuAttention(q, k, v, torch::Tensor()),
                          ReferenceAttention(q, k, v, torch::Tensor())),
            1e-6);
}

TEST_F(CpuAttentionTest, LargeScoresStayFinite) {
  // Scores of ~1e3 overflow exp without the row maximum subtracted.
  const PackedQkv qkv = MakePackedQkv(1, 2, 30, 64);
  const torch::Tensor q = qkv.q * 40.0;
  const torch::Tensor got = CpuAttention(q, qkv.k, qkv.v, torch::Tensor());
  EXPECT_TRUE(torch::isfinite(got).all().item<bool>());
  EXPECT_LT(RelativeError(got, ReferenceAttention(q, qkv.k, qkv.v, torch::Tensor())), 1e-5);
}

TEST_F(CpuAttentionTest, DeclinesWhatItDoesNotCompute) {
  const PackedQkv qkv = MakePackedQkv(1, 2, 4, 8);
  EXPECT_FALSE(CpuAttentionApplies(qkv.q.to(torch::kDouble), qkv.k.to(torch::kDouble),
                                   qkv.v.to(torch::kDouble), torch::Tensor()));
  EXPECT_FALSE(CpuAttentionApplies(qkv.q.to(torch::kBFloat16), qkv.k.to(torch::kBFloat16),
                                   qkv.v.to(torch::kBFloat16), torch::Tensor()));
  {
    // Training, and gradient checkpointing's no-grad forward, keep LibTorch's.
    c10::InferenceMode off(false);
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(CpuAttentionApplies(qkv.q, qkv.k, qkv.v, torch::Tensor()));
  }
  EXPECT_FALSE(CpuAttentionApplies(qkv.q, qkv.k, qkv.v, torch::zeros({3, 4})));
  EXPECT_FALSE(CpuAttentionApplies(qkv.q, qkv.k, qkv.v, torch::zeros({4, 4}, torch::kBool)));
  EXPECT_FALSE(CpuAttentionApplies(qkv.q, qkv.k.narrow(3, 0, 4), qkv.v, torch::Tensor()));
  EXPECT_THROW(CpuAttention(qkv.q.to(torch::kDouble), qkv.k, qkv.v, torch::Tensor()),
               c10::Error);
}

class CpuAttentionBf16Test : public CpuAttentionTest {
 protected:
  void SetUp() override {
    if (!AmxBf16Available()) GTEST_SKIP() << kNoAmxBf16;
    CpuAttentionTest::SetUp();
  }
};

// Bounds, from what these inputs measured: against the bf16-rounded
// composition the kernel differs by fp32 accumulation order, ~1e-7, and up to
// 2.3e-4 where a probability lands on the other side of a bf16 rounding
// boundary; against the exact composition by bf16 rounding, 2.5e-3 to
// 5.7e-3. The first bound sits between the two, so it also checks that the
// bf16 kernel is the one that ran.
constexpr double kBf16KernelBound = 1e-3;
constexpr double kBf16RoundingBound = 2e-2;

TEST_F(CpuAttentionBf16Test, MatchesTheCompositionOnBf16Operands) {
  // ViT-B-32, ViT-H (80 per head), ViT-L-14 (257 tokens, 16 heads: two head
  // groups per image), tiny and odd sizes, one image over many heads.
  const int64_t shapes[][4] = {{2, 12, 50, 64}, {1, 16, 50, 80}, {1, 16, 257, 64},
                               {3, 2, 1, 24},   {1, 3, 17, 7},   {2, 1, 33, 104},
                               {1, 2, 70, 64},  {1, 12, 50, 64}};
  for (const auto& s : shapes) {
    const PackedQkv qkv = MakePackedQkv(s[0], s[1], s[2], s[3]);
    const torch::Tensor got =
        CpuAttention(qkv.q, qkv.k, qkv.v, torch::Tensor(), AttentionPrecision::kBf16);
    ASSERT_EQ(got.sizes(), qkv.q.sizes());
    const std::string shape = std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" +
                              std::to_string(s[2]) + "x" + std::to_string(s[3]);
    EXPECT_LT(RelativeError(got, ReferenceBf16Attention(qkv.q, qkv.k, qkv.v, torch::Tensor())),
              kBf16KernelBound)
        << "shape " << shape;
    const double rounding =
        RelativeError(got, ReferenceAttention(qkv.q, qkv.k, qkv.v, torch::Tensor()));
    EXPECT_LT(rounding, kBf16RoundingBound) << "shape " << shape;
    EXPECT_GT(rounding, 1e-5) << "shape " << shape << ": no bf16 rounding, so the fp32 kernel ran";
  }
}

TEST_F(CpuAttentionBf16Test, CausalAndPaddingMasks) {
  for (const int64_t length : {77, 12, 5}) {
    const PackedQkv qkv = MakePackedQkv(2, 8, length, 64);
    const torch::Tensor mask = torch::full({length, length}, -std::numeric_limits<float>::infinity())
                                   .triu(1);
    const torch::Tensor got = CpuAttention(qkv.q, qkv.k, qkv.v, mask, AttentionPrecision::kBf16);
    EXPECT_LT(RelativeError(got, ReferenceBf16Attention(qkv.q, qkv.k, qkv.v, mask)),
              kBf16KernelBound)
        << "length " << length;
    // The first query sees only the first key, with probability exactly 1.
    EXPECT_TRUE(torch::equal(got.select(2, 0),
                             qkv.v.select(2, 0).to(torch::kBFloat16).to(torch::kFloat)));
  }
  const PackedQkv qkv = MakePackedQkv(3, 4, 21, 64);
  torch::Tensor mask = torch::zeros({3, 1, 1, 21});
  mask.index_put_({1, 0, 0, torch::indexing::Slice(15, torch::indexing::None)},
                  std::numeric_limits<float>::lowest());
  mask.index_put_({2, 0, 0, torch::indexing::Slice(3, torch::indexing::None)}, -1e4f);
  EXPECT_LT(RelativeError(CpuAttention(qkv.q, qkv.k, qkv.v, mask, AttentionPrecision::kBf16),
                          ReferenceBf16Attention(qkv.q, qkv.k, qkv.v, mask)),
            kBf16KernelBound);
}

TEST_F(CpuAttentionBf16Test, OneQueryAndLargeScores) {
  const torch::Tensor q = torch::randn({4, 32, 1, 64});
  const torch::Tensor k = torch::randn({4, 50, 32, 64}).transpose(1, 2);
  const torch::Tensor v = torch::randn({4, 50, 32, 64}).transpose(1, 2);
  EXPECT_LT(RelativeError(CpuAttention(q, k, v, torch::Tensor(), AttentionPrecision::kBf16),
                          ReferenceBf16Attention(q, k, v, torch::Tensor())),
            kBf16KernelBound);
  const PackedQkv qkv = MakePackedQkv(1, 2, 30, 64);
  const torch::Tensor large = qkv.q * 40.0;
  const torch::Tensor got =
      CpuAttention(large, qkv.k, qkv.v, torch::Tensor(), AttentionPrecision::kBf16);
  EXPECT_TRUE(torch::isfinite(got).all().item<bool>());
}

}  // namespace
}  // namespace oclip::testing
