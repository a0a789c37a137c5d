#include "core/status.h"

#include <gtest/gtest.h>

namespace oclip {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  OCLIP_ASSIGN_OR_RETURN(int half, Half(x));
  OCLIP_ASSIGN_OR_RETURN(half, Half(half));
  return half;
}

absl::Status CheckEven(int x, int* calls) {
  ++*calls;
  return x % 2 == 0 ? absl::OkStatus() : absl::InvalidArgumentError("odd");
}

absl::Status BothEven(int a, int b, int* calls) {
  OCLIP_RETURN_IF_ERROR(CheckEven(a, calls));
  OCLIP_RETURN_IF_ERROR(CheckEven(b, calls));
  return absl::OkStatus();
}

TEST(StatusMacrosTest, AssignOrReturnPropagatesErrors) {
  EXPECT_EQ(*Quarter(12), 3);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quarter(7).status().message(), "odd");
}

TEST(StatusMacrosTest, ReturnIfErrorStopsAtTheFirstError) {
  int calls = 0;
  EXPECT_TRUE(BothEven(2, 4, &calls).ok());
  EXPECT_EQ(calls, 2);
  calls = 0;
  EXPECT_FALSE(BothEven(1, 4, &calls).ok());
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace oclip
