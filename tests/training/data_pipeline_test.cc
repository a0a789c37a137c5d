// DataPipeline: CSV epochs split over ranks as torch's DistributedSampler
// splits them (and cropped the same whatever the world size), webdataset
// epochs sized by --train-num-samples, evaluation order with a partial last
// batch, and clear errors for unusable options.

#include "training/data_pipeline.h"

#include <gtest/gtest.h>

#include <fstream>
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
