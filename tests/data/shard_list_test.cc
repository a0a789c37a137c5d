#include "data/shard_list.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_format.h"

namespace oclip {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Expand(const std::string& spec) {
  absl::StatusOr<std::vector<std::string>> shards = ExpandShardList(spec);
  EXPECT_TRUE(shards.ok()) << spec << ": " << shards.status();
  return shards.ok() ? *shards : std::vector<std::string>{};
}

TEST(ShardListTest, PlainPathIsOneShard) {
  EXPECT_THAT(Expand("/data/shard.tar"), ElementsAre("/data/shard.tar"));
}

TEST(ShardListTest, ZeroPaddedRangeKeepsPadding) {
  EXPECT_THAT(
      Expand("/data/{00000..00003}.tar"),
      ElementsAre("/data/00000.tar", "/data/00001.tar", "/data/00002.tar", "/data/00003.tar"));
}

TEST(ShardListTest, LongRangeMatchesPrintfPadding) {
  const std::vector<std::string> shards = Expand("s/{000000..001233}.tar");
  ASSERT_EQ(shards.size(), 1234u);
  for (int i = 0; i < 1234; ++i) EXPECT_EQ(shards[i], absl::StrFormat("s/%06d.tar", i));
}

TEST(ShardListTest, PadsToTheWiderEndpointWhenEitherHasALeadingZero) {
  EXPECT_THAT(Expand("{8..010}"), ElementsAre("008", "009", "010"));
  EXPECT_THAT(Expand("{09..10}"), ElementsAre("09", "10"));
}

TEST(ShardListTest, NoPaddingWithoutLeadingZero) {
  EXPECT_THAT(Expand("{9..11}"), ElementsAre("9", "10", "11"));
  EXPECT_THAT(Expand("{0..2}"), ElementsAre("0", "1", "2"));
}

TEST(ShardListTest, RangeWithStep) {
  EXPECT_THAT(Expand("x/{0..10..5}.tar"), ElementsAre("x/0.tar", "x/5.tar", "x/10.tar"));
  EXPECT_THAT(Expand("{00..07..3}"), ElementsAre("00", "03", "06"));
}

TEST(ShardListTest, SeveralBracesLeftmostVariesSlowest) {
  EXPECT_THAT(Expand("{a,b}/{0..1}_{x,y}.tar"),
              ElementsAre("a/0_x.tar", "a/0_y.tar", "a/1_x.tar", "a/1_y.tar", "b/0_x.tar",
                          "b/0_y.tar", "b/1_x.tar", "b/1_y.tar"));
  EXPECT_EQ(Expand("{000..009}_{000..009}").size(), 100u);
}

TEST(ShardListTest, CommaListsNestAndMayHoldRangesOrBeEmpty) {
  EXPECT_THAT(Expand("s3://b/{train,val}.tar"), ElementsAre("s3://b/train.tar", "s3://b/val.tar"));
  EXPECT_THAT(Expand("{a,{b,c}{1..2}}"), ElementsAre("a", "b1", "b2", "c1", "c2"));
  EXPECT_THAT(Expand("x{,-old}.tar"), ElementsAre("x.tar", "x-old.tar"));
}

TEST(ShardListTest, DoubleColonJoinsSources) {
  EXPECT_THAT(Expand("a.tar::b/{1..2}.tar::pipe:curl -s http://h/{0,1}.tar"),
              ElementsAre("a.tar", "b/1.tar", "b/2.tar", "pipe:curl -s http://h/0.tar",
                          "pipe:curl -s http://h/1.tar"));
}

TEST(ShardListTest, BackslashEscapesBraces) {
  EXPECT_THAT(Expand("pipe:awk '\\{print $1\\}' {1,2}.txt"),
              ElementsAre("pipe:awk '{print $1}' 1.txt", "pipe:awk '{print $1}' 2.txt"));
}

TEST(ShardListTest, MalformedPatternsAreInvalidArgument) {
  for (const char* spec : {"", "/d/{0..3", "/d/0..3}.tar", "{}", "{a}", "{3..1}", "{0..10..0}",
                           "{a..c}", "{1..2..3..4}", "{-1..2}", "a::", "::b", "a::::b", "x\\",
                           "{1234567890123456789..1234567890123456790}"}) {
    absl::StatusOr<std::vector<std::string>> shards = ExpandShardList(spec);
    EXPECT_EQ(shards.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
}

TEST(ShardListTest, AbsurdCountsAreRefusedBeforeExpanding) {
  for (const char* spec : {"{0..99999999}", "{0..9999}{0..9999}", "{0..5000000}::{0..5000000}",
                           "{0..999}{0..999}{0..999}{0..999}{0..999}{0..999}{0..999}"}) {
    absl::StatusOr<std::vector<std::string>> shards = ExpandShardList(spec);
    EXPECT_EQ(shards.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
}

TEST(ShardListTest, ShardsForWorkerTakesEveryNth) {
  const std::vector<std::string> shards = Expand("{0..6}");
  absl::StatusOr<std::vector<std::string>> one = ShardsForWorker(shards, 1, 3);
  ASSERT_TRUE(one.ok());
  EXPECT_THAT(*one, ElementsAre("1", "4"));
  size_t total = 0;
  for (int w = 0; w < 3; ++w) total += ShardsForWorker(shards, w, 3)->size();
  EXPECT_EQ(total, shards.size());
  EXPECT_EQ(ShardsForWorker(shards, 3, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardsForWorker(shards, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardsForWorker(shards, -1, 2).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
