// SelectOpenBlasCore (model/openblas_core.h) in this test process, which links
// LibTorch and its BLAS as the executable does. Where OpenBLAS fell back to
// its Prescott kernels on a CPU with AVX-512 (and OPENBLAS_CORETYPE is
// unset), it must now run its SkylakeX kernels, and they must compute fp32
// GEMMs correctly; everywhere else nothing may change. Skips, saying so,
// where the BLAS is not OpenBLAS.

#include "model/openblas_core.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

namespace oclip::testing {
namespace {

// max |got - want| / max |want|, want in double.
double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kDouble) - want).abs().max().item<double>() /
         want.abs().max().item<double>();
}

TEST(OpenBlasCoreTest, SwitchesOnlyTheFallbackOfAnAvx512Cpu) {
  const auto corename =
      reinterpret_cast<const char* (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (corename == nullptr) GTEST_SKIP() << "this process's BLAS is not OpenBLAS";
  const std::string before = corename();
  const bool should_switch = before == "Prescott" &&
                             std::getenv("OPENBLAS_CORETYPE") == nullptr &&
                             CpuRunsOpenBlasSkylakeXKernels();
  torch::manual_seed(5);
  const torch::Tensor a = torch::randn({257, 300});
  const torch::Tensor b = torch::randn({300, 190});
  const torch::Tensor reference = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble));
  ASSERT_LT(RelativeError(torch::mm(a, b), reference), 1e-5);

  const OpenBlasCore core = SelectOpenBlasCore();
  EXPECT_EQ(core.detected, before);
  EXPECT_EQ(core.selected, should_switch ? std::string("SkylakeX") : before);
  EXPECT_EQ(core.selected, corename());
  EXPECT_EQ(OpenBlasCoreName(), core.selected);
  // Whatever runs now (new kernels, after earlier BLAS calls) computes the
  // same GEMM to fp32 accuracy.
  EXPECT_LT(RelativeError(torch::mm(a, b), reference), 1e-5);
  if (should_switch) {
    const char* coretype = std::getenv("OPENBLAS_CORETYPE");
    ASSERT_NE(coretype, nullptr);
    EXPECT_EQ(std::string(coretype), "SkylakeX");  // what child processes inherit
  }
  // A second call finds nothing left to do.
  const OpenBlasCore again = SelectOpenBlasCore();
  EXPECT_EQ(again.detected, core.selected);
  EXPECT_EQ(again.selected, core.selected);
}

}  // namespace
}  // namespace oclip::testing
