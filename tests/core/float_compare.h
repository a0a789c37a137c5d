// Comparing float arrays in tests (test-only, no LibTorch).

#ifndef OCLIP_TESTS_CORE_FLOAT_COMPARE_H_
#define OCLIP_TESTS_CORE_FLOAT_COMPARE_H_

#include <algorithm>
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace oclip::testing {

// How far apart the features of one model and precision may be when computed
// in batches of different composition (`oclip encode` against `oclip serve`,
// `oclip embed`, concurrent clients): a batch's other rows change BLAS
// blocking and the text tower's length, which moves float32 sums by ~1e-7,
// and on CPUs with AMX-BF16 fp32 GEMMs run as bf16x3 (model/amx_linear.h),
// which splits each value into two bfloat16 on its own, so such a change can
// move a feature by a few 1e-6 (measured: up to 3e-6). A wrong or swapped row
// is off by O(1).
inline constexpr double kSameModelTolerance = 1e-5;

// ||actual - expected|| / ||expected|| over whole arrays (the parity
// measure of every feature test); a size mismatch fails the test.
inline double RelativeError(const std::vector<float>& actual, const std::vector<float>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    diff += (actual[i] - expected[i]) * double(actual[i] - expected[i]);
    norm += expected[i] * double(expected[i]);
  }
  return std::sqrt(diff / norm);
}

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_CORE_FLOAT_COMPARE_H_
