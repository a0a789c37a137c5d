#include "training/data_pipeline.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "core/logging.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "data/open_source.h"
#include "data/shard_list.h"
#include "data/webdataset.h"

namespace oclip {
namespace {

std::mt19937_64 SeededRng(uint64_t seed, int64_t epoch, int64_t rank, int64_t position) {
  std::seed_seq sequence{static_cast<uint32_t>(seed),
                         static_cast<uint32_t>(seed >> 32),
                         static_cast<uint32_t>(epoch),
                         static_cast<uint32_t>(rank),
                         static_cast<uint32_t>(position),
                         static_cast<uint32_t>(static_cast<uint64_t>(position) >> 32)};
  return std::mt19937_64(sequence);
}

}  // namespace

ResampledShards::ResampledShards(std::vector<std::string> shards, uint64_t seed, int64_t epoch,
                                 int rank)
    : shards_(std::move(shards)), rng_(SeededRng(seed, epoch, rank, -2)) {}

const std::string& ResampledShards::Next() {
  // Uniform over [0, n) by rejection (std::uniform_int_distribution's
  // algorithm is the library's choice; this sequence is the same everywhere).
  const uint64_t n = shards_.size();
  const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                         std::numeric_limits<uint64_t>::max() % n;
  uint64_t r;
  do {
    r = rng_();
  } while (r >= limit);
  return shards_[r % n];
}

DataPipeline::DataPipeline(const DataPipelineOptions& options, const Tokenizer* tokenizer)
    : options_(options), tokenizer_(tokenizer) {}

DataPipeline::~DataPipeline() = default;

absl::StatusOr<std::unique_ptr<DataPipeline>> DataPipeline::Create(
    const DataPipelineOptions& options, const Tokenizer* tokenizer) {
  if (options.batch_size < 1) return absl::InvalidArgumentError("--batch-size must be >= 1");
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError("rank must lie in [0, world_size)");
  }
  if (tokenizer == nullptr) return absl::InvalidArgumentError("no tokenizer");
  std::unique_ptr<DataPipeline> pipeline(new DataPipeline(options, tokenizer));
  pipeline->pool_ = std::make_unique<ThreadPool>(std::max(1, options.workers));
  OCLIP_RETURN_IF_ERROR(pipeline->ListItems());
  return pipeline;
}

int64_t DataPipeline::num_samples() const {
  if (!options_.train) {
    return streaming_ ? options_.num_samples : static_cast<int64_t>(items_.size());
  }
  return num_batches_ * options_.batch_size * options_.world_size;
}

absl::Status DataPipeline::ListItems() {
  const std::string& type = options_.dataset_type;
  const int64_t global_batch = options_.batch_size * options_.world_size;
  if (type == "synthetic") {
    synthetic_ = true;
    if (options_.num_samples <= 0) {
      return absl::InvalidArgumentError("--dataset-type synthetic needs --train-num-samples");
    }
    items_.resize(options_.num_samples, Item{"", "", "Dummy caption", -1});
  } else {
    if (options_.data.empty()) return absl::InvalidArgumentError("no data given");
    OCLIP_ASSIGN_OR_RETURN(DatasetType kind, ParseDatasetType(type));
    if (kind == DatasetType::kAuto) {
      const std::string lower = absl::AsciiStrToLower(options_.data);
      if (absl::EndsWith(lower, ".csv") || absl::EndsWith(lower, ".tsv")) {
        kind = DatasetType::kCsv;
      } else if (absl::StrContains(lower, ".tar")) {
        kind = DatasetType::kWebDataset;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("cannot infer --dataset-type of ",
                                                       options_.data, " (use csv or webdataset)"));
      }
    }
    if (kind == DatasetType::kImageFolder) {
      return absl::InvalidArgumentError("training data must be csv, webdataset or synthetic");
    }
    if (options_.resampled && kind != DatasetType::kWebDataset) {
      return absl::InvalidArgumentError("--dataset-resampled applies to webdataset data only");
    }
    if (kind == DatasetType::kWebDataset) {
      streaming_ = true;
      if (options_.train && options_.num_samples <= 0) {
        return absl::InvalidArgumentError(
            "webdataset training data needs --train-num-samples (the epoch size)");
      }
      if (options_.resampled && options_.train) {
        OCLIP_ASSIGN_OR_RETURN(shards_, ExpandShardList(options_.data));
        if (shards_.empty()) {
          return absl::InvalidArgumentError(absl::StrCat(options_.data, " names no shards"));
        }
      }
      num_batches_ = options_.train ? (options_.num_samples + global_batch - 1) / global_batch : 0;
      return absl::OkStatus();
    }
    OpenSourceOptions source_options;
    source_options.type = DatasetType::kCsv;
    source_options.csv.image_key = options_.csv_img_key;
    source_options.csv.caption_key = options_.csv_caption_key;
    source_options.csv.separator = options_.csv_separator;
    source_options.csv.read_images = false;
    OCLIP_ASSIGN_OR_RETURN(auto source, OpenSampleSource(options_.data, source_options));
    Sample sample;
    while (true) {
      OCLIP_ASSIGN_OR_RETURN(bool more, source->Next(&sample));
      if (!more) break;
      items_.push_back(
          Item{sample.image_path, "", sample.caption, static_cast<int64_t>(items_.size())});
    }
    if (source->stats().total_failures() > 0) {
      LogWarning(absl::StrCat(options_.data, ": ", source->stats().ToString()));
    }
    if (!options_.train && options_.num_samples > 0 &&
        static_cast<int64_t>(items_.size()) > options_.num_samples) {
      items_.resize(options_.num_samples);
    }
  }
  if (items_.empty()) return absl::InvalidArgumentError(absl::StrCat(options_.data, " is empty"));
  const int64_t per_rank =
      (static_cast<int64_t>(items_.size()) + options_.world_size - 1) / options_.world_size;
  num_batches_ = options_.train ? per_rank / options_.batch_size
                                : (per_rank + options_.batch_size - 1) / options_.batch_size;
  if (num_batches_ == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        options_.data.empty() ? "the synthetic set" : options_.data, " has ", items_.size(),
        " samples: fewer than one batch of ", options_.batch_size, " per rank"));
  }
  return absl::OkStatus();
}

absl::Status DataPipeline::OpenStream() {
  stream_samples_ = 0;
  if (resampler_ != nullptr) {
    WebDatasetSource::Options wds;
    wds.shards = {resampler_->Next()};
    OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<WebDatasetSource> source,
                           WebDatasetSource::Create(std::move(wds)));
    stream_ = std::move(source);
    return absl::OkStatus();
  }
  OpenSourceOptions source_options;
  source_options.type = DatasetType::kWebDataset;
  source_options.worker_index = options_.train ? options_.rank : 0;
  source_options.num_workers = options_.train ? options_.world_size : 1;
  OCLIP_ASSIGN_OR_RETURN(stream_, OpenSampleSource(options_.data, source_options));
  return absl::OkStatus();
}

absl::Status DataPipeline::StartEpoch(int epoch) {
  epoch_ = epoch;
  batches_done_ = 0;
  samples_done_ = 0;
  cursor_ = 0;
  if (streaming_) {
    shuffle_buffer_.clear();
    shuffle_rng_ = SeededRng(options_.seed, epoch, options_.rank, -1);
    stream_restarted_ = false;
    empty_draws_ = 0;
    if (!shards_.empty()) {
      resampler_ = std::make_unique<ResampledShards>(shards_, options_.seed, epoch, options_.rank);
    }
    return OpenStream();
  }
  const int64_t n = static_cast<int64_t>(items_.size());
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (options_.train) {
    std::mt19937_64 rng = SeededRng(options_.seed, epoch, 0, -1);
    std::shuffle(order.begin(), order.end(), rng);
    // DistributedSampler: pad with the first positions, then stride by rank.
    const int64_t total = (n + options_.world_size - 1) / options_.world_size * options_.world_size;
    for (int64_t i = n; i < total; ++i) order.push_back(order[i - n]);
    epoch_order_.clear();
    for (int64_t i = options_.rank; i < total; i += options_.world_size) {
      epoch_order_.push_back(order[i]);
    }
  } else {
    epoch_order_ = std::move(order);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> DataPipeline::NextStreamed(Item* item) {
  Sample sample;
  // Fill the buffer, then hand out a random element (webdataset's shuffle).
  const size_t buffer = options_.train ? std::max<size_t>(1, options_.shuffle_buffer) : 1;
  while (shuffle_buffer_.size() < buffer) {
    OCLIP_ASSIGN_OR_RETURN(bool more, stream_->Next(&sample));
    if (!more && resampler_ != nullptr) {
      // The drawn shard is done: draw the next. A list whose shards yield
      // nothing (missing, corrupt, captionless) must not loop forever.
      empty_draws_ = stream_samples_ > 0 ? 0 : empty_draws_ + 1;
      const int64_t limit = std::max<int64_t>(100, 3 * static_cast<int64_t>(shards_.size()));
      if (empty_draws_ >= limit) {
        return absl::InvalidArgumentError(absl::StrCat(
            options_.data, ": ", empty_draws_, " shards drawn in a row held no sample with an "
            "image and a caption"));
      }
      OCLIP_RETURN_IF_ERROR(OpenStream());
      continue;
    }
    if (!more) {
      if (!options_.train) break;
      if (stream_restarted_ && shuffle_buffer_.empty() && samples_done_ == 0) {
        return absl::InvalidArgumentError(absl::StrCat(options_.data, " holds no samples"));
      }
      if (!shuffle_buffer_.empty()) break;
      stream_restarted_ = true;
      OCLIP_RETURN_IF_ERROR(OpenStream());
      continue;
    }
    if (!sample.has_caption) continue;
    ++stream_samples_;
    shuffle_buffer_.push_back(Item{"", std::move(sample.image), std::move(sample.caption)});
  }
  if (shuffle_buffer_.empty()) return false;
  const size_t pick = options_.train ? shuffle_rng_() % shuffle_buffer_.size() : 0;
  *item = std::move(shuffle_buffer_[pick]);
  shuffle_buffer_[pick] = std::move(shuffle_buffer_.back());
  shuffle_buffer_.pop_back();
  if (!options_.train) std::reverse(shuffle_buffer_.begin(), shuffle_buffer_.end());
  return true;
}

absl::StatusOr<bool> DataPipeline::NextItem(Item* item) {
  if (streaming_) {
    if (!options_.train && options_.num_samples > 0 && samples_done_ >= options_.num_samples) {
      return false;
    }
    return NextStreamed(item);
  }
  if (cursor_ >= epoch_order_.size()) return false;
  *item = items_[epoch_order_[cursor_++]];
  return true;
}

absl::StatusOr<bool> DataPipeline::Next(Batch* batch) {
  if (options_.train && batches_done_ >= num_batches_) return false;
  const int64_t s = options_.preprocess.image_size;
  const int64_t batch_size = options_.batch_size;
  std::vector<Item> chosen;
  std::vector<std::string> captions;
  torch::Tensor images = torch::empty({batch_size, 3, s, s});
  int64_t filled = 0;
  bool exhausted = false;
  while (filled < batch_size && !exhausted) {
    // Take the missing number of items and decode them in parallel.
    std::vector<Item> candidates;
    while (static_cast<int64_t>(candidates.size()) < batch_size - filled) {
      Item item;
      OCLIP_ASSIGN_OR_RETURN(bool more, NextItem(&item));
      if (!more) {
        exhausted = true;
        break;
      }
      candidates.push_back(std::move(item));
    }
    if (candidates.empty()) break;
    std::vector<absl::Status> results(candidates.size());
    absl::BlockingCounter pending(static_cast<int>(candidates.size()));
    for (size_t i = 0; i < candidates.size(); ++i) {
      const int64_t position = samples_done_ + static_cast<int64_t>(i);
      float* out = images[filled + static_cast<int64_t>(i)].data_ptr<float>();
      pool_->Schedule([this, &candidates, &results, &pending, i, position, out] {
        const Item& item = candidates[i];
        absl::Status status;
        if (synthetic_) {
          const int64_t plane = options_.preprocess.image_size * options_.preprocess.image_size;
          for (int c = 0; c < 3; ++c) {
            std::fill(out + c * plane, out + (c + 1) * plane,
                      -options_.preprocess.mean[c] / options_.preprocess.std[c]);
          }
        } else {
          absl::StatusOr<std::string> bytes = item.image;
          if (item.image.empty()) bytes = ReadFileToString(item.image_path);
          if (!bytes.ok()) {
            status = bytes.status();
          } else if (options_.train) {
            std::mt19937_64 rng = item.index >= 0
                                      ? SeededRng(options_.seed, epoch_, -1, item.index)
                                      : SeededRng(options_.seed, epoch_, options_.rank, position);
            status =
                PreprocessTrainImageBytes(*bytes, options_.preprocess, options_.crop, rng, out);
          } else {
            status = PreprocessImageBytes(*bytes, options_.preprocess, out);
          }
        }
        results[i] = status;
        pending.DecrementCount();
      });
    }
    pending.Wait();
    samples_done_ += static_cast<int64_t>(candidates.size());
    // Compact the successes to the front of the unfilled rows.
    int64_t next = filled;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (!results[i].ok()) {
        ++failed_images_;
        LogWarning(absl::StrCat(
            "skipping image ",
            candidates[i].image_path.empty() ? "(webdataset sample)" : candidates[i].image_path,
            ": ", results[i].message()));
        continue;
      }
      if (next != filled + static_cast<int64_t>(i)) {
        images[next].copy_(images[filled + static_cast<int64_t>(i)]);
      }
      captions.push_back(std::move(candidates[i].caption));
      ++next;
    }
    filled = next;
  }
  if (filled == 0 || (options_.train && filled < batch_size)) {
    if (options_.train && filled < batch_size && batches_done_ < num_batches_) {
      return absl::DataLossError(absl::StrCat("ran out of decodable training images after ",
                                              batches_done_, " of ", num_batches_,
                                              " batches of epoch ", epoch_));
    }
    return false;
  }
  std::vector<int64_t> ids = tokenizer_->Tokenize(captions);
  batch->images = images.narrow(0, 0, filled);
  batch->tokens =
      torch::from_blob(ids.data(), {filled, tokenizer_->context_length()}, torch::kLong).clone();
  ++batches_done_;
  return true;
}

}  // namespace oclip
