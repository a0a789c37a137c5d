// DataPipeline: CSV epochs split over ranks as torch's DistributedSampler
// splits them (and cropped the same whatever the world size), webdataset
// epochs sized by --train-num-samples (with --dataset-resampled: shards drawn
// with replacement per rank and epoch), evaluation order with a partial last
// batch, and clear errors for unusable options.

#include "training/data_pipeline.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/tokenizer/load_tokenizer.h"
#include "tests/core/scratch_dir.h"
#include "tests/data/test_shards.h"
#include "tests/model/reference.h"

namespace oclip {
namespace {

using testing::ReferencePath;
using testing::ScratchPath;

std::unique_ptr<Tokenizer> MakeTokenizer() {
  auto config = ResolveModelConfig(ReferencePath("tiny-vit.json"));
  EXPECT_TRUE(config.ok()) << config.status();
  auto tokenizer = LoadTokenizer(*config, ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

// A CSV over the 7 fixture images; caption i is "caption i".
std::string WriteFixtureCsv() {
  const std::string path = ScratchPath("fixtures.csv");
  std::ofstream out(path);
  out << "filepath\ttitle\n";
  int i = 0;
  for (const std::string& name : testing::FixtureImageNames()) {
    out << testing::FixtureImagePath(name) << "\tcaption " << i++ << "\n";
  }
  return path;
}

DataPipelineOptions CsvOptions(const std::string& csv, int64_t batch, int rank, int world) {
  DataPipelineOptions options;
  options.data = csv;
  options.batch_size = batch;
  options.rank = rank;
  options.world_size = world;
  options.workers = 2;
  options.seed = 5;
  options.preprocess.image_size = 32;
  return options;
}

std::vector<Batch> Epoch(DataPipeline& pipeline, int epoch) {
  std::vector<Batch> batches;
  EXPECT_TRUE(pipeline.StartEpoch(epoch).ok());
  while (true) {
    Batch batch;
    auto more = pipeline.Next(&batch);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    batches.push_back(batch);
  }
  return batches;
}

TEST(DataPipelineTest, RanksSplitTheEpochLikeDistributedSampler) {
  const std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const std::string csv = WriteFixtureCsv();
  // One rank with batch 4 vs two ranks with batch 2: 7 rows, padded to 8.
  auto single = DataPipeline::Create(CsvOptions(csv, 4, 0, 1), tokenizer.get());
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ((*single)->num_batches(), 1);  // 7 // 4, last partial batch dropped.
  std::vector<std::unique_ptr<DataPipeline>> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    auto pipeline = DataPipeline::Create(CsvOptions(csv, 2, rank, 2), tokenizer.get());
    ASSERT_TRUE(pipeline.ok()) << pipeline.status();
    EXPECT_EQ((*pipeline)->num_batches(), 2);  // ceil(7 / 2) = 4 rows per rank.
    ranks.push_back(std::move(*pipeline));
  }
  for (int epoch : {0, 1}) {
    const std::vector<Batch> whole = Epoch(**single, epoch);
    ASSERT_EQ(whole.size(), 1u);
    ASSERT_EQ(whole[0].images.sizes(), (std::vector<int64_t>{4, 3, 32, 32}));
    ASSERT_EQ(whole[0].tokens.sizes(), (std::vector<int64_t>{4, 77}));
    const std::vector<Batch> rank0 = Epoch(*ranks[0], epoch), rank1 = Epoch(*ranks[1], epoch);
    ASSERT_EQ(rank0.size(), 2u);
    ASSERT_EQ(rank1.size(), 2u);
    // Position p of the permutation goes to rank p % 2, row p / 2: the first
    // global batch of 4 is rank 0 row 0, rank 1 row 0, rank 0 row 1, rank 1
    // row 1 -- with identical crops.
    const std::vector<const Batch*> owner = {&rank0[0], &rank1[0], &rank0[0], &rank1[0]};
    for (int64_t p = 0; p < 4; ++p) {
      EXPECT_TRUE(torch::equal(whole[0].images[p], owner[p]->images[p / 2])) << "row " << p;
      EXPECT_TRUE(torch::equal(whole[0].tokens[p], owner[p]->tokens[p / 2])) << "row " << p;
    }
    // Each rank's epoch holds distinct rows (padding repeats the first row
    // of the permutation only on the 8th slot).
    std::set<int64_t> seen;
    for (const auto* batches : {&rank0, &rank1}) {
      for (const Batch& b : *batches) {
        for (int64_t i = 0; i < b.tokens.size(0); ++i) seen.insert(b.tokens[i][2].item<int64_t>());
      }
    }
    EXPECT_EQ(seen.size(), 7u) << "every caption's number token appears";
  }
  // Another epoch is another permutation.
  EXPECT_FALSE(torch::equal(Epoch(**single, 0)[0].tokens, Epoch(**single, 1)[0].tokens));
}

TEST(DataPipelineTest, EvaluationKeepsFileOrderAndThePartialBatch) {
  const std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  DataPipelineOptions options = CsvOptions(WriteFixtureCsv(), 4, 0, 1);
  options.train = false;
  auto pipeline = DataPipeline::Create(options, tokenizer.get());
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  const std::vector<Batch> batches = Epoch(**pipeline, 0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].images.size(0), 4);
  EXPECT_EQ(batches[1].images.size(0), 3);
  // "caption 5" is row 1 of the second batch.
  const std::vector<int64_t> ids = tokenizer->Tokenize(std::vector<std::string>{"caption 5"});
  EXPECT_TRUE(torch::equal(batches[1].tokens[1], torch::tensor(ids, torch::kLong)));
}

TEST(DataPipelineTest, WebDatasetEpochIsSizedByNumSamples) {
  const std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  std::vector<testing::ExpectedSample> expected;
  const std::string shard = testing::WriteFixtureShard("train-000.tar", &expected);
  DataPipelineOptions options = CsvOptions(shard, 3, 0, 1);
  options.dataset_type = "webdataset";
  EXPECT_EQ(DataPipeline::Create(options, tokenizer.get()).status().code(),
            absl::StatusCode::kInvalidArgument)
      << "webdataset training needs --train-num-samples";
  options.num_samples = 10;  // ceil(10 / 3) = 4 batches: the 7 samples are read again.
  auto pipeline = DataPipeline::Create(options, tokenizer.get());
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  EXPECT_EQ((*pipeline)->num_batches(), 4);
  const std::vector<Batch> batches = Epoch(**pipeline, 0);
  ASSERT_EQ(batches.size(), 4u);
  for (const Batch& b : batches) EXPECT_EQ(b.images.size(0), 3);
  EXPECT_EQ((*pipeline)->failed_images(), 0);
}

// `count` shards "resampled-00K.tar" of `per_shard` samples each, captioned
// "shard K"; returns the brace pattern naming them.
std::string WriteCaptionedShards(int count, int per_shard) {
  std::ifstream in(testing::FixtureImagePath(testing::FixtureImageNames()[0]), std::ios::binary);
  const std::string jpeg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(jpeg.empty());
  const std::string extension =
      testing::FixtureImageNames()[0].substr(testing::FixtureImageNames()[0].rfind('.') + 1);
  for (int k = 0; k < count; ++k) {
    std::vector<testing::TarMember> members;
    for (int j = 0; j < per_shard; ++j) {
      const std::string key = "s" + std::to_string(k) + "_" + std::to_string(j);
      members.push_back({key + "." + extension, jpeg});
      members.push_back({key + ".txt", "shard " + std::to_string(k)});
    }
    testing::WriteTar(ScratchPath("resampled-00" + std::to_string(k) + ".tar"), members);
  }
  return ScratchPath("resampled-{000.." + std::string("00") + std::to_string(count - 1) +
                     "}.tar");
}

// The shard ("shard K") of every sample of an epoch, in order.
std::vector<int> EpochShards(DataPipeline& pipeline, int epoch, const Tokenizer& tokenizer,
                             int shards) {
  std::map<int64_t, int> shard_of_token;
  for (int k = 0; k < shards; ++k) {
    shard_of_token[tokenizer.Tokenize(std::vector<std::string>{"shard " + std::to_string(k)})[2]] =
        k;
  }
  std::vector<int> order;
  for (const Batch& b : Epoch(pipeline, epoch)) {
    for (int64_t i = 0; i < b.tokens.size(0); ++i) {
      auto it = shard_of_token.find(b.tokens[i][2].item<int64_t>());
      order.push_back(it == shard_of_token.end() ? -1 : it->second);
    }
  }
  return order;
}

TEST(DataPipelineTest, ResampledShardsAreDrawnWithReplacement) {
  std::vector<std::string> names = {"a", "b", "c", "d"};
  ResampledShards draws(names, /*seed=*/5, /*epoch=*/0, /*rank=*/0);
  std::map<std::string, int> counts;
  int repeats = 0;
  std::string previous;
  std::vector<std::string> first;
  for (int i = 0; i < 4000; ++i) {
    const std::string& name = draws.Next();
    if (i < 8) first.push_back(name);
    ++counts[name];
    repeats += name == previous;
    previous = name;
  }
  // Uniform: each of 4 shards ~1000 times (5 standard deviations: +-137);
  // with replacement: a shard follows itself ~1/4 of the time (a pass over a
  // permutation would repeat at most at its boundaries, ~1/4 as often).
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& [name, count] : counts) EXPECT_NEAR(count, 1000, 137) << name;
  EXPECT_NEAR(repeats, 1000, 137);
  // Deterministic for (seed, epoch, rank); another of each draws differently.
  auto first8 = [&](uint64_t seed, int64_t epoch, int rank) {
    ResampledShards other(names, seed, epoch, rank);
    std::vector<std::string> out;
    for (int i = 0; i < 8; ++i) out.push_back(other.Next());
    return out;
  };
  EXPECT_EQ(first8(5, 0, 0), first);
  EXPECT_NE(first8(6, 0, 0), first);
  EXPECT_NE(first8(5, 1, 0), first);
  EXPECT_NE(first8(5, 0, 1), first);
}

TEST(DataPipelineTest, ResampledEpochIsNumSamplesOfDrawnShards) {
  const std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  constexpr int kShards = 4, kPerShard = 3;
  DataPipelineOptions options = CsvOptions(WriteCaptionedShards(kShards, kPerShard), 5, 1, 2);
  options.dataset_type = "webdataset";
  options.num_samples = 40;  // 4 batches of 5 per rank: 20 samples, not whole shards.
  options.resampled = true;
  options.shuffle_buffer = 1;  // Stream order, to see the shard sequence.
  auto pipeline = DataPipeline::Create(options, tokenizer.get());
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  EXPECT_EQ((*pipeline)->num_batches(), 4);
  EXPECT_EQ((*pipeline)->num_samples(), 40);
  for (int epoch : {0, 1}) {
    const std::vector<int> order = EpochShards(**pipeline, epoch, *tokenizer, kShards);
    ASSERT_EQ(order.size(), 20u) << "epoch " << epoch;
    // Shard after drawn shard, whole, from the rank's draws of this epoch
    // (from the whole list: rank 1 is not confined to shards 1 and 3), cut
    // where the epoch's samples are complete.
    std::vector<std::string> names;
    for (int k = 0; k < kShards; ++k) {
      names.push_back(ScratchPath("resampled-00" + std::to_string(k) + ".tar"));
    }
    ResampledShards draws(names, options.seed, epoch, /*rank=*/1);
    std::vector<int> expected;
    std::set<int> drawn;
    while (expected.size() < order.size()) {
      const std::string& name = draws.Next();
      const int k = name[name.size() - 5] - '0';
      drawn.insert(k);
      for (int j = 0; j < kPerShard && expected.size() < order.size(); ++j) expected.push_back(k);
    }
    EXPECT_EQ(order, expected) << "epoch " << epoch;
    EXPECT_TRUE(drawn.count(0) + drawn.count(2) > 0) << "rank 1 draws from every shard";
  }
  // The same seed gives the same epoch; the next epoch is another draw.
  auto again = DataPipeline::Create(options, tokenizer.get());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(EpochShards(**again, 0, *tokenizer, kShards),
            EpochShards(**pipeline, 0, *tokenizer, kShards));
  EXPECT_NE(EpochShards(**again, 1, *tokenizer, kShards),
            EpochShards(**pipeline, 0, *tokenizer, kShards));
}

TEST(DataPipelineTest, ResampledShardsWithoutSamplesAreAnError) {
  const std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const std::string empty = ScratchPath("empty-resampled.tar");
  testing::WriteTar(empty, {});
  DataPipelineOptions options = CsvOptions(empty, 2, 0, 1);
  options.dataset_type = "webdataset";
  options.num_samples = 4;
  options.resampled = true;
  auto pipeline = DataPipeline::Create(options, tokenizer.get());
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  ASSERT_TRUE((*pipeline)->StartEpoch(0).ok());
  Batch batch;
  EXPECT_EQ((*pipeline)->Next(&batch).status().code(), absl::StatusCode::kInvalidArgument);
  // Resampling is a webdataset notion.
  DataPipelineOptions csv = CsvOptions(WriteFixtureCsv(), 2, 0, 1);
  csv.resampled = true;
  EXPECT_EQ(DataPipeline::Create(csv, tokenizer.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DataPipelineTest, RejectsUnusableOptions) {
  const std::unique_ptr<Tokenizer> tokenizer = MakeTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  DataPipelineOptions options = CsvOptions(WriteFixtureCsv(), 8, 0, 1);
  auto too_big = DataPipeline::Create(options, tokenizer.get());
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find("fewer than one batch"), std::string::npos);
  options.data = ScratchPath("images.zip");
  EXPECT_EQ(DataPipeline::Create(options, tokenizer.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.dataset_type = "synthetic";
  options.num_samples = 0;
  EXPECT_EQ(DataPipeline::Create(options, tokenizer.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
