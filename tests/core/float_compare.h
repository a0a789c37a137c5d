// Comparing float arrays in tests (test-only, no LibTorch).

#ifndef OCLIP_TESTS_CORE_FLOAT_COMPARE_H_
#define OCLIP_TESTS_CORE_FLOAT_COMPARE_H_

#include <algorithm>
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace oclip::testing {

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
