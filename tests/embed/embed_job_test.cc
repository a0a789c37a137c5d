// `oclip embed` end to end, run as a user runs it: the embeddings it writes
// must equal `oclip encode --normalize` for the same images and captions
// (another code path through the same model), its metadata must describe
// the samples the test put into the dataset, and its partitions must be
// idempotent: an interrupted and resumed job, and a job split over two
// workers, write byte-identical files to one uninterrupted worker.

#include "embed/embed_job.h"

#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/npy.h"
#include "data/open_source.h"
#include "embed/npy_rows.h"
#include "tests/core/float_compare.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/data/test_shards.h"

namespace oclip {
namespace {

namespace fs = std::filesystem;
using ::oclip::testing::kSameModelTolerance;
using ::oclip::testing::CommandResult;
using ::oclip::testing::FixtureImageNames;
using ::oclip::testing::FixtureImagePath;
using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ReferencePath;
using ::oclip::testing::RelativeError;
using ::oclip::testing::ScratchPath;
using ::oclip::testing::TarMember;
using ::oclip::testing::WriteFile;
using ::oclip::testing::WriteTar;

TEST(EmbedJobStatsTest, JsonHasEveryFailureKind) {
  EmbedJobStats stats;
  stats.samples = 3;
  stats.failures[static_cast<int>(FailureKind::kTruncated)] = 2;
  stats.partitions_assigned = 4;
  stats.partitions_done = 1;
  stats.partitions_skipped = 2;
  const nlohmann::json json = nlohmann::json::parse(stats.ToJson());
  ASSERT_EQ(json["failures"].size(), static_cast<size_t>(kNumFailureKinds));
  for (int k = 0; k < kNumFailureKinds; ++k) {
    const std::string name(FailureKindName(static_cast<FailureKind>(k)));
    EXPECT_EQ(json["failures"][name], stats.failures[k]) << name;
  }
  EXPECT_EQ(json["failures_total"], 2);
  EXPECT_EQ(json["partitions_remaining"], 1);
}

TEST(EmbedJobPathsTest, LayoutIsClipRetrievals) {
  EmbedJobOptions options;
  options.output_folder = "/out";
  EXPECT_EQ(ImageEmbeddingPath("/out", 3), "/out/img_emb/img_emb_3.npy");
  EXPECT_EQ(TextEmbeddingPath("/out", 3), "/out/text_emb/text_emb_3.npy");
  EXPECT_EQ(MetadataPath("/out", 3), "/out/metadata/metadata_3.jsonl");
  EXPECT_EQ(PartitionDonePath(options, 3), MetadataPath("/out", 3));
  options.enable_metadata = false;
  EXPECT_EQ(PartitionDonePath(options, 3), "/out/_done/partition_3");
}

#ifdef OCLIP_BINARY

// What the test put into a dataset, by sample key.
struct Item {
  std::string image_path;  // The fixture file whose bytes the sample holds.
  std::string caption;
  bool has_caption = true;
  std::string url;  // "" = no url.
};

struct Dataset {
  std::string spec;  // The --input-dataset value.
  std::vector<std::string> shards;
  std::map<std::string, Item> items;
};

std::string FreshDirectory(const std::string& name) {
  const std::string dir = ScratchPath(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Fixture images spread over `num_shards` tar shards, in order; sample 3 has
// no caption and sample 1 no .json member.
Dataset MakeShards(const std::string& name, int num_shards) {
  Dataset dataset;
  const std::string dir = FreshDirectory(name);
  const std::vector<std::string> images = FixtureImageNames();
  const int n = static_cast<int>(images.size());
  for (int s = 0; s < num_shards; ++s) {
    std::vector<TarMember> members;
    for (int i = s * n / num_shards; i < (s + 1) * n / num_shards; ++i) {
      const std::string key = absl::StrFormat("%05d/%06d", s, i);
      Item item;
      item.image_path = FixtureImagePath(images[i]);
      item.has_caption = i != 3;
      if (item.has_caption) item.caption = absl::StrCat("a photo of ", images[i], ", number ", i);
      const std::string ext = images[i].substr(images[i].rfind('.') + 1);
      members.push_back({key + "." + ext, ReadFileOrEmpty(item.image_path)});
      if (item.has_caption) members.push_back({key + ".txt", item.caption});
      if (i != 1) {
        item.url = absl::StrCat("https://example.com/", images[i]);
        members.push_back({key + ".json", nlohmann::json{{"url", item.url}, {"i", i}}.dump()});
      }
      dataset.items[key] = item;
    }
    const std::string shard = absl::StrFormat("%s/%05d.tar", dir, s);
    WriteTar(shard, members);
    dataset.shards.push_back(shard);
  }
  dataset.spec = absl::StrFormat("%s/{00000..%05d}.tar", dir, num_shards - 1);
  return dataset;
}

std::vector<std::string> ModelArgs() {
  return {"--model",      ReferencePath("tiny-vit.json"),
          "--pretrained", ReferencePath("tiny-vit.safetensors"),
          "--tokenizer",  ReferencePath("bpe_simple_vocab_16e6.txt.gz")};
}

CommandResult RunOclip(const std::string& command, std::vector<std::string> args) {
  std::vector<std::string> argv = {OCLIP_BINARY, command};
  const std::vector<std::string> model = ModelArgs();
  argv.insert(argv.end(), model.begin(), model.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return ::oclip::testing::RunCommand(argv);
}

// Runs `oclip embed ARGS` (plus the model flags); returns the stats JSON it
// prints, failing the test unless it exits 0.
nlohmann::json Embed(std::vector<std::string> args) {
  const CommandResult run = RunOclip("embed", std::move(args));
  EXPECT_EQ(run.exit_code, 0) << run.command << "\n" << run.err;
  if (run.exit_code != 0) return nlohmann::json::object();
  std::istringstream lines(run.out);
  std::string line, last;
  while (std::getline(lines, line)) {
    if (!line.empty()) last = line;
  }
  nlohmann::json stats = nlohmann::json::parse(last, nullptr, false);
  EXPECT_TRUE(stats.is_object()) << run.out;
  return stats;
}

struct MetadataRow {
  nlohmann::json json;
  std::string key;
};

std::vector<nlohmann::json> ReadMetadata(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::istringstream lines(ReadFileOrEmpty(path));
  std::string line;
  while (std::getline(lines, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// Everything under `dir` (relative path -> bytes).
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      files[fs::relative(entry.path(), dir).string()] = ReadFileOrEmpty(entry.path().string());
    }
  }
  return files;
}

std::vector<std::string> Names(const std::map<std::string, std::string>& files) {
  std::vector<std::string> names;
  for (const auto& [name, bytes] : files) names.push_back(name);
  return names;
}

// Checks partitions 0..P-1 of `out` against the dataset and against `oclip
// encode --normalize` of the images and captions the metadata names. Returns
// the rows' keys in output order.
std::vector<std::string> VerifyOutput(const std::string& out, int partitions,
                                      const Dataset& dataset, NpyDtype dtype) {
  std::vector<std::string> keys;
  std::vector<float> image_rows, text_rows;
  std::vector<std::string> encode_args = {
      "--normalize", "--batch-size", "3", "--output",
      FreshDirectory("encode_" + fs::path(out).filename().string())};
  for (int p = 0; p < partitions; ++p) {
    SCOPED_TRACE(absl::StrCat("partition ", p));
    const std::vector<nlohmann::json> metadata = ReadMetadata(MetadataPath(out, p));
    auto images = ReadNpyRows(ImageEmbeddingPath(out, p));
    auto texts = ReadNpyRows(TextEmbeddingPath(out, p));
    if (!images.ok() || !texts.ok()) {
      ADD_FAILURE() << images.status() << " " << texts.status();
      return keys;
    }
    EXPECT_EQ(images->dtype, dtype);
    EXPECT_EQ(texts->dtype, dtype);
    EXPECT_EQ(images->rows, static_cast<int64_t>(metadata.size()));
    EXPECT_EQ(texts->rows, static_cast<int64_t>(metadata.size()));
    image_rows.insert(image_rows.end(), images->values.begin(), images->values.end());
    text_rows.insert(text_rows.end(), texts->values.begin(), texts->values.end());
    for (size_t r = 0; r < metadata.size(); ++r) {
      const nlohmann::json& row = metadata[r];
      const std::string key = row["key"];
      keys.push_back(key);
      auto it = dataset.items.find(key);
      if (it == dataset.items.end()) {
        ADD_FAILURE() << "unknown key " << key;
        continue;
      }
      const Item& item = it->second;
      EXPECT_EQ(row["partition"], p);
      EXPECT_EQ(row["row"], static_cast<int64_t>(r));
      if (item.has_caption) {
        EXPECT_EQ(row["caption"], item.caption);
      } else {
        EXPECT_TRUE(row["caption"].is_null()) << row;
      }
      if (item.url.empty()) {
        EXPECT_TRUE(row["url"].is_null()) << row;
      } else {
        EXPECT_EQ(row["url"], item.url);
      }
      EXPECT_TRUE(row.contains("shard") && row.contains("index_in_shard")) << row;
      encode_args.insert(encode_args.end(), {"--image", item.image_path, "--text", item.caption});
    }
  }
  const CommandResult encode = RunOclip("encode", encode_args);
  EXPECT_EQ(encode.exit_code, 0) << encode.err;
  const std::string encode_out = encode_args[4];
  auto image_expected = ReadNpyFloat32(encode_out + "/image_features.npy");
  auto text_expected = ReadNpyFloat32(encode_out + "/text_features.npy");
  if (!image_expected.ok() || !text_expected.ok()) {
    ADD_FAILURE() << image_expected.status() << " " << text_expected.status();
    return keys;
  }
  EXPECT_EQ(image_expected->values.size(), image_rows.size());
  EXPECT_EQ(text_expected->values.size(), text_rows.size());
  if (image_expected->values.size() != image_rows.size() ||
      text_expected->values.size() != text_rows.size()) {
    return keys;
  }
  if (dtype == NpyDtype::kFloat32) {
    const double image_error = RelativeError(image_rows, image_expected->values);
    const double text_error = RelativeError(text_rows, text_expected->values);
    EXPECT_LT(image_error, kSameModelTolerance);
    EXPECT_LT(text_error, kSameModelTolerance);
    std::printf("[ parity   ] oclip embed vs encode: image %.3g, text %.3g relative error\n",
                image_error, text_error);
  } else {
    // Within float16 rounding (half an ulp: 2^-11 relative, 2^-25 absolute
    // for subnormals) of the float32 features, plus the batches' noise.
    for (const auto& [actual, expected] : {std::pair(&image_rows, &image_expected->values),
                                           std::pair(&text_rows, &text_expected->values)}) {
      for (size_t i = 0; i < actual->size(); ++i) {
        const float e = (*expected)[i];
        EXPECT_LE(std::abs((*actual)[i] - e),
                  std::abs(e) * 0x1.0p-11 + 0x1.0p-25 + kSameModelTolerance)
            << i;
      }
    }
  }
  return keys;
}

std::vector<std::string> SortedKeys(const Dataset& dataset) {
  std::vector<std::string> keys;
  for (const auto& [key, item] : dataset.items) keys.push_back(key);
  return keys;
}

TEST(EmbedCommandTest, WebDatasetMatchesEncodeAndWritesOnePartitionPerShard) {
  const Dataset dataset = MakeShards("wds", 3);
  const std::string out = FreshDirectory("wds_out32");
  const nlohmann::json stats =
      Embed({"--input-dataset", dataset.spec, "--input-format", "webdataset", "--output-folder",
             out, "--batch-size", "2", "--output-dtype", "float32", "--num-prepro-workers", "2"});
  EXPECT_EQ(stats["partitions_total"], 3);
  EXPECT_EQ(stats["partitions_done"], 3);
  EXPECT_EQ(stats["partitions_skipped"], 0);
  EXPECT_EQ(stats["samples"], dataset.items.size());
  EXPECT_EQ(stats["failures_total"], 0);
  std::vector<std::string> keys = VerifyOutput(out, 3, dataset, NpyDtype::kFloat32);
  // One partition per shard, in shard order: every sample exactly once.
  EXPECT_EQ(keys, SortedKeys(dataset));
  for (int p = 0; p < 3; ++p) {
    for (const nlohmann::json& row : ReadMetadata(MetadataPath(out, p))) {
      EXPECT_EQ(row["shard"], dataset.shards[p]);
    }
  }
  EXPECT_FALSE(fs::exists(out + "/img_emb/img_emb_3.npy"));

  // Float16 (the default) is the float32 output rounded, value for value.
  const std::string out16 = FreshDirectory("wds_out16");
  Embed({"--input-dataset", dataset.spec, "--output-folder", out16, "--batch-size", "2"});
  VerifyOutput(out16, 3, dataset, NpyDtype::kFloat16);
  for (int p = 0; p < 3; ++p) {
    for (auto path : {&ImageEmbeddingPath, &TextEmbeddingPath}) {
      auto f32 = ReadNpyRows(path(out, p));
      auto f16 = ReadNpyRows(path(out16, p));
      ASSERT_TRUE(f32.ok() && f16.ok());
      ASSERT_EQ(f32->values.size(), f16->values.size());
      for (size_t i = 0; i < f32->values.size(); ++i) {
        EXPECT_EQ(f16->values[i], static_cast<float>(c10::Half(f32->values[i])));
      }
    }
    EXPECT_EQ(ReadFileOrEmpty(MetadataPath(out, p)), ReadFileOrEmpty(MetadataPath(out16, p)));
  }
}

TEST(EmbedCommandTest, InterruptedJobResumesToIdenticalOutput) {
  const Dataset dataset = MakeShards("resume", 4);
  const std::vector<std::string> common = {"--input-dataset",    dataset.spec, "--batch-size", "3",
                                           "--write-batch-size", "1"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const std::string whole = FreshDirectory("resume_whole");
  Embed(with({"--output-folder", whole}));
  const std::map<std::string, std::string> expected = Snapshot(whole);
  EXPECT_EQ(expected.size(), 12u) << absl::StrJoin(Names(expected), " ");

  const std::string out = FreshDirectory("resume_out");
  nlohmann::json first = Embed(with({"--output-folder", out, "--max-partitions", "1"}));
  EXPECT_EQ(first["partitions_done"], 1);
  EXPECT_EQ(first["partitions_remaining"], 3);
  EXPECT_TRUE(fs::exists(MetadataPath(out, 0)));
  EXPECT_FALSE(fs::exists(MetadataPath(out, 1)));
  // What a worker killed in partition 1 and in partition 2's renames leaves:
  // temporary files and embeddings without their metadata (not done).
  WriteFile(ImageEmbeddingPath(out, 1) + ".tmp", "half a partition");
  WriteFile(MetadataPath(out, 1) + ".tmp", "{\"key\": \"half\"}\n");
  WriteFile(ImageEmbeddingPath(out, 2), "stale embeddings");
  nlohmann::json second = Embed(with({"--output-folder", out, "--max-partitions", "2"}));
  EXPECT_EQ(second["partitions_skipped"], 1);
  EXPECT_EQ(second["partitions_done"], 2);
  nlohmann::json third = Embed(with({"--output-folder", out}));
  EXPECT_EQ(third["partitions_skipped"], 3);
  EXPECT_EQ(third["partitions_done"], 1);
  nlohmann::json again = Embed(with({"--output-folder", out}));
  EXPECT_EQ(again["partitions_skipped"], 4);
  EXPECT_EQ(again["partitions_done"], 0);
  EXPECT_EQ(again["samples"], 0);

  const std::map<std::string, std::string> resumed = Snapshot(out);
  EXPECT_EQ(Names(resumed), Names(expected));
  for (const auto& [name, bytes] : expected) {
    EXPECT_TRUE(resumed.count(name) && resumed.at(name) == bytes) << name;
  }
  // No duplicates: every sample once.
  std::vector<std::string> keys = VerifyOutput(out, 4, dataset, NpyDtype::kFloat16);
  EXPECT_EQ(keys, SortedKeys(dataset));
}

TEST(EmbedCommandTest, TwoWorkersWriteWhatOneWorkerWrites) {
  const Dataset dataset = MakeShards("workers", 3);
  const std::string one = FreshDirectory("workers_one");
  Embed({"--input-dataset", dataset.spec, "--output-folder", one, "--batch-size", "2"});
  const std::string two = FreshDirectory("workers_two");
  nlohmann::json w0 = Embed({"--input-dataset", dataset.spec, "--output-folder", two,
                             "--batch-size", "2", "--num-workers", "2", "--worker-index", "0"});
  EXPECT_EQ(w0["partitions_assigned"], 2);  // Partitions 0 and 2.
  EXPECT_EQ(Names(Snapshot(two)),
            (std::vector<std::string>{"img_emb/img_emb_0.npy", "img_emb/img_emb_2.npy",
                                      "metadata/metadata_0.jsonl", "metadata/metadata_2.jsonl",
                                      "text_emb/text_emb_0.npy", "text_emb/text_emb_2.npy"}));
  // Worker 1 from a Kubernetes Indexed Job's environment.
  const CommandResult w1 = ::oclip::testing::RunCommand(
      {"env", "JOB_COMPLETION_INDEX=1", "OCLIP_NUM_WORKERS=2", OCLIP_BINARY, "embed", "--model",
       ReferencePath("tiny-vit.json"), "--pretrained", ReferencePath("tiny-vit.safetensors"),
       "--tokenizer", ReferencePath("bpe_simple_vocab_16e6.txt.gz"), "--input-dataset",
       dataset.spec, "--output-folder", two, "--batch-size", "2"});
  ASSERT_EQ(w1.exit_code, 0) << w1.err;
  EXPECT_EQ(nlohmann::json::parse(w1.out)["partitions_done"], 1);
  EXPECT_EQ(Snapshot(two), Snapshot(one));
}

TEST(EmbedCommandTest, CorruptSamplesAreSkippedAndCounted) {
  Dataset dataset = MakeShards("corrupt", 2);
  // A third shard: a garbage image member between two good samples.
  const std::string dir = ScratchPath("corrupt");
  std::vector<TarMember> members;
  const std::string good = FixtureImagePath(FixtureImageNames()[0]);
  for (int i = 0; i < 3; ++i) {
    const std::string key = absl::StrFormat("00002/%06d", 100 + i);
    members.push_back(
        {key + ".jpg", i == 1 ? std::string("not a jpeg at all") : ReadFileOrEmpty(good)});
    members.push_back({key + ".txt", "caption " + key});
    if (i != 1) dataset.items[key] = Item{good, "caption " + key, true, ""};
  }
  WriteTar(dir + "/00002.tar", members);
  // Shard 1 truncated in the middle of its last image.
  const std::string shard1 = dataset.shards[1];
  const std::string bytes = ReadFileOrEmpty(shard1);
  int64_t last_image = -1;
  for (const auto& [member, offset] : ::oclip::testing::MemberHeaderOffsets(shard1)) {
    if (member.find(".txt") == std::string::npos && member.find(".json") == std::string::npos) {
      last_image = offset;
    }
  }
  ASSERT_GT(last_image, 0);
  WriteFile(shard1, bytes.substr(0, static_cast<size_t>(last_image) + 512 + 100));
  const std::string spec = dir + "/{00000..00002}.tar";

  // What the data library itself reads from these shards (another path).
  auto source = OpenSampleSource(spec);
  ASSERT_TRUE(source.ok()) << source.status();
  std::vector<Sample> samples = ::oclip::testing::ReadAll(**source);
  const SourceStats& read_stats = (*source)->stats();
  EXPECT_EQ(read_stats.failure_count(FailureKind::kTruncated), 1);
  std::set<std::string> read_keys;
  for (const Sample& sample : samples) read_keys.insert(sample.key);
  for (auto it = dataset.items.begin(); it != dataset.items.end();) {
    it = read_keys.count(it->first) ? std::next(it) : dataset.items.erase(it);
  }

  const std::string out = FreshDirectory("corrupt_out");
  const nlohmann::json stats = Embed({"--input-dataset", spec, "--output-folder", out,
                                      "--output-dtype", "float32", "--batch-size", "4"});
  EXPECT_EQ(stats["failures"]["unreadable_image"], 1);
  for (int k = 0; k < kNumFailureKinds; ++k) {
    const FailureKind kind = static_cast<FailureKind>(k);
    if (kind == FailureKind::kUnreadableImage) continue;
    EXPECT_EQ(stats["failures"][std::string(FailureKindName(kind))], read_stats.failure_count(kind))
        << FailureKindName(kind);
  }
  EXPECT_EQ(stats["samples_read"], samples.size());
  EXPECT_EQ(stats["samples"], samples.size() - 1);
  EXPECT_EQ(stats["partitions_done"], 3);
  std::vector<std::string> keys = VerifyOutput(out, 3, dataset, NpyDtype::kFloat32);
  EXPECT_EQ(keys, SortedKeys(dataset));
}

TEST(EmbedCommandTest, MissingShardLeavesItsPartitionForARerun) {
  const Dataset dataset = MakeShards("missing", 3);
  const std::string whole = FreshDirectory("missing_whole");
  Embed({"--input-dataset", dataset.spec, "--output-folder", whole});

  // Shard 1 is away (a storage hiccup): its partition must not be committed
  // empty, and the exit code tells the scheduler to retry.
  const std::string away = dataset.shards[1] + ".away";
  fs::rename(dataset.shards[1], away);
  const std::string out = FreshDirectory("missing_out");
  const CommandResult run =
      RunOclip("embed", {"--input-dataset", dataset.spec, "--output-folder", out});
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find("run again"), std::string::npos) << run.err;
  const nlohmann::json stats = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_TRUE(stats.is_object()) << run.out;
  EXPECT_EQ(stats["partitions_done"], 2);
  EXPECT_EQ(stats["partitions_failed"], 1);
  EXPECT_EQ(stats["failures"]["missing_file"], 1);
  EXPECT_FALSE(fs::exists(MetadataPath(out, 1)));
  EXPECT_FALSE(fs::exists(ImageEmbeddingPath(out, 1) + ".tmp"));

  fs::rename(away, dataset.shards[1]);
  const nlohmann::json rerun = Embed({"--input-dataset", dataset.spec, "--output-folder", out});
  EXPECT_EQ(rerun["partitions_done"], 1);
  EXPECT_EQ(rerun["partitions_skipped"], 2);
  EXPECT_EQ(Snapshot(out), Snapshot(whole));
}

TEST(EmbedCommandTest, CsvInputWithPartitions) {
  Dataset dataset;
  const std::string dir = FreshDirectory("csv");
  std::string csv = "filepath,title\n";
  int i = 0;
  for (const std::string& name : FixtureImageNames()) {
    Item item{FixtureImagePath(name), absl::StrCat("csv caption ", i, " for ", name), true, ""};
    absl::StrAppend(&csv, item.image_path, ",\"", item.caption, "\"\n");
    dataset.items[item.image_path] = item;
    ++i;
  }
  absl::StrAppend(&csv, dir, "/missing.png,a missing image\n");
  WriteFile(dir + "/data.csv", csv);
  const std::string out = FreshDirectory("csv_out");
  const nlohmann::json stats =
      Embed({"--input-dataset", dir + "/data.csv", "--input-format", "csv", "--csv-separator", ",",
             "--output-folder", out, "--output-partition-count", "2", "--output-dtype", "float32",
             "--batch-size", "3"});
  EXPECT_EQ(stats["partitions_done"], 2);
  EXPECT_EQ(stats["samples"], dataset.items.size());
  EXPECT_EQ(stats["failures"]["missing_file"], 1);
  std::vector<std::string> keys = VerifyOutput(out, 2, dataset, NpyDtype::kFloat32);
  // Partition p holds rows r with r % 2 == p.
  std::vector<std::string> rows;
  for (const std::string& name : FixtureImageNames()) rows.push_back(FixtureImagePath(name));
  std::vector<std::string> expected;
  for (int p = 0; p < 2; ++p) {
    for (size_t r = p; r < rows.size(); r += 2) expected.push_back(rows[r]);
  }
  EXPECT_EQ(keys, expected);
}

TEST(EmbedCommandTest, ImageFolderInput) {
  Dataset dataset;
  const std::string dir = FreshDirectory("folder");
  int i = 0;
  for (const std::string& name : FixtureImageNames()) {
    fs::copy_file(FixtureImagePath(name), dir + "/" + name);
    const std::string key = name.substr(0, name.rfind('.'));
    Item item{dir + "/" + name, "", i % 2 == 0, ""};
    if (item.has_caption) {
      item.caption = absl::StrCat("folder caption ", i);
      WriteFile(dir + "/" + key + ".txt", item.caption);
    }
    dataset.items[key] = item;
    ++i;
  }
  const std::string out = FreshDirectory("folder_out");
  const nlohmann::json stats = Embed({"--input-dataset", dir, "--input-format", "files",
                                      "--output-folder", out, "--output-dtype", "float32"});
  EXPECT_EQ(stats["partitions_total"], 1);
  EXPECT_EQ(stats["samples"], dataset.items.size());
  EXPECT_EQ(VerifyOutput(out, 1, dataset, NpyDtype::kFloat32), SortedKeys(dataset));
}

// `oclip index build` over what `oclip embed` wrote, then `oclip index
// search`: every image of the dataset finds itself first (cosine 1), joined
// with its own key, caption and url from the metadata store.
TEST(IndexCommandTest, EveryImageFindsItselfWithItsMetadata) {
  const Dataset dataset = MakeShards("index_data", 2);
  const std::string out = FreshDirectory("index_out");
  Embed({"--input-dataset", dataset.spec, "--output-folder", out, "--output-dtype", "float32"});
  const std::string folder = out + "/index";
  const CommandResult build = ::oclip::testing::RunCommand(
      {OCLIP_BINARY, "index", "build", "--embeddings", out, "--index-folder", folder});
  ASSERT_EQ(build.exit_code, 0) << build.command << "\n" << build.err;
  const nlohmann::json infos = nlohmann::json::parse(build.out, nullptr, false);
  ASSERT_TRUE(infos.is_object()) << build.out;
  EXPECT_EQ(infos["nb_vectors"], static_cast<int>(dataset.items.size()));

  std::vector<std::string> search = {OCLIP_BINARY, "index", "search", "--index-folder", folder,
                                     "--k", "1"};
  const std::vector<std::string> model = ModelArgs();
  search.insert(search.end(), model.begin(), model.end());
  for (const auto& [key, item] : dataset.items) {
    search.push_back("--image");
    search.push_back(item.image_path);
  }
  const CommandResult run = ::oclip::testing::RunCommand(search);
  ASSERT_EQ(run.exit_code, 0) << run.command << "\n" << run.err;
  std::istringstream lines(run.out);
  std::string line;
  auto expected = dataset.items.begin();
  for (; std::getline(lines, line) && expected != dataset.items.end(); ++expected) {
    const nlohmann::json answer = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(answer.is_object()) << line;
    ASSERT_EQ(answer["hits"].size(), 1u) << line;
    const nlohmann::json& hit = answer["hits"][0];
    EXPECT_EQ(hit["key"], expected->first) << line;
    EXPECT_EQ(hit["caption"], expected->second.caption) << line;
    EXPECT_EQ(hit["url"], expected->second.url) << line;
    EXPECT_GT(hit["score"].get<double>(), 0.9999) << line;
  }
  EXPECT_EQ(expected, dataset.items.end()) << "fewer answers than queries:\n" << run.out;

  // Metadata that does not match the embeddings is refused before building.
  fs::remove(out + "/metadata/metadata_1.jsonl");
  const CommandResult mismatch = ::oclip::testing::RunCommand(
      {OCLIP_BINARY, "index", "build", "--embeddings", out, "--index-folder", out + "/index2"});
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(mismatch.err, "metadata_1.jsonl")) << mismatch.err;
}

TEST(EmbedCommandTest, PipeShardsGiveTheSameEmbeddings) {
  const Dataset dataset = MakeShards("pipe", 2);
  const std::string files = FreshDirectory("pipe_files");
  Embed({"--input-dataset", dataset.spec, "--output-folder", files});
  const std::string piped = FreshDirectory("pipe_out");
  const std::string spec = "pipe:cat " + ScratchPath("pipe") + "/{00000..00001}.tar";
  const nlohmann::json stats =
      Embed({"--input-dataset", spec, "--input-format", "webdataset", "--output-folder", piped});
  EXPECT_EQ(stats["partitions_done"], 2);
  for (int p = 0; p < 2; ++p) {
    EXPECT_EQ(ReadFileOrEmpty(ImageEmbeddingPath(piped, p)),
              ReadFileOrEmpty(ImageEmbeddingPath(files, p)));
    EXPECT_EQ(ReadFileOrEmpty(TextEmbeddingPath(piped, p)),
              ReadFileOrEmpty(TextEmbeddingPath(files, p)));
    const std::vector<nlohmann::json> rows = ReadMetadata(MetadataPath(piped, p));
    ASSERT_FALSE(rows.empty());
    for (const nlohmann::json& row : rows) {
      EXPECT_EQ(row["shard"], absl::StrFormat("pipe:cat %s/%05d.tar", ScratchPath("pipe"), p));
    }
  }
}

TEST(EmbedCommandTest, OptionalOutputsAndBadFlags) {
  const Dataset dataset = MakeShards("optional", 1);
  const std::string out = FreshDirectory("optional_out");
  Embed({"--input-dataset", dataset.spec, "--output-folder", out, "--enable-text=false",
         "--enable-metadata=false"});
  EXPECT_EQ(Names(Snapshot(out)),
            (std::vector<std::string>{"_done/partition_0", "img_emb/img_emb_0.npy"}));
  // The image embeddings are those of the full run.
  const std::string full = FreshDirectory("optional_full");
  Embed({"--input-dataset", dataset.spec, "--output-folder", full});
  EXPECT_EQ(ReadFileOrEmpty(ImageEmbeddingPath(out, 0)),
            ReadFileOrEmpty(ImageEmbeddingPath(full, 0)));

  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--output-folder", out}, 1, "--input-dataset is required"},
           {{"--input-dataset", dataset.spec}, 1, "--output-folder is required"},
           {{"--input-dataset", dataset.spec, "--output-folder", out, "--output-dtype", "int8"},
            1,
            "--output-dtype: unknown dtype 'int8'; expected float16 or float32"},
           {{"--input-dataset", dataset.spec, "--output-folder", out, "--worker-index", "2",
             "--num-workers", "2"},
            1,
            "outside [0, 2)"},
           {{"--input-dataset", dataset.spec, "--output-folder", out, "--enable-image=false",
             "--enable-text=false"},
            1,
            "nothing to embed"},
           {{"--input-dataset", dataset.spec, "--output-folder", out, "--precision", "fp8"},
            1,
            "--precision: unknown precision 'fp8'; expected fp32, fp16, bf16 or int8"},
           {{"--input-dataset", dataset.spec, "--output-folder", out, "--precision", "fp16"},
            1,
            "--precision: fp16 needs a CUDA device; use fp32, bf16 or int8 on cpu"},
           {{"--input-dataset", dataset.spec, "--bogus"}, 2, "unknown flag --bogus"},
       }) {
    const CommandResult run = RunOclip("embed", c.args);
    EXPECT_EQ(run.exit_code, c.exit_code) << run.command << "\n" << run.err;
    EXPECT_NE(run.err.find(c.message), std::string::npos) << run.err;
  }
}

TEST(EmbedCommandTest, PrecisionReachesTheModel) {
  // int8 embeddings are the fp32 ones to within quantization: close in angle,
  // but not equal (equal would mean the flag never reached the model).
  const Dataset dataset = MakeShards("precision", 1);
  const std::string fp32 = FreshDirectory("precision_fp32");
  const std::string int8 = FreshDirectory("precision_int8");
  const std::vector<std::string> common = {"--input-dataset", dataset.spec, "--output-dtype",
                                           "float32"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = common;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  Embed(with({"--output-folder", fp32}));
  Embed(with({"--output-folder", int8, "--precision", "int8"}));
  for (auto path : {&ImageEmbeddingPath, &TextEmbeddingPath}) {
    auto a = ReadNpyRows(path(fp32, 0));
    auto b = ReadNpyRows(path(int8, 0));
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->values.size(), b->values.size());
    ASSERT_GT(a->rows, 0);
    const size_t dim = a->values.size() / a->rows;
    float max_difference = 0;
    double min_cosine = 1;
    for (int64_t r = 0; r < a->rows; ++r) {
      double dot = 0, na = 0, nb = 0;
      for (size_t i = r * dim; i < (r + 1) * dim; ++i) {
        max_difference = std::max(max_difference, std::abs(a->values[i] - b->values[i]));
        dot += double{a->values[i]} * b->values[i];
        na += double{a->values[i]} * a->values[i];
        nb += double{b->values[i]} * b->values[i];
      }
      min_cosine = std::min(min_cosine, dot / std::sqrt(na * nb));
    }
    EXPECT_GT(max_difference, 0.0f);
    EXPECT_GE(min_cosine, 0.99);
  }
}

#endif  // OCLIP_BINARY

}  // namespace
}  // namespace oclip
