// Training and validation batches from a dataset, the way OpenCLIP's
// training/data.py delivers them, for one rank of a data-parallel job.
//
//   csv        every row (image path + caption) is listed up front; each
//              epoch is a permutation seeded with seed + epoch, split over
//              ranks like torch's DistributedSampler (padded to a multiple
//              of the world size, rank r takes positions r, r + world, ...);
//              training drops the last partial batch.
//   webdataset samples stream through a shuffle buffer seeded with (seed,
//              epoch, rank); an epoch is ceil(num_samples / (batch·world))
//              batches of this rank, whatever the shard boundaries. Without
//              resampling, a rank reads its own shards (split_by_node: every
//              world-th shard) in order, and again when they run out. With
//              `resampled` (--dataset-resampled, OpenCLIP's ResampledShards2)
//              each rank draws shards from the whole list uniformly WITH
//              replacement, from a generator seeded with (seed, epoch, rank)
//              (ResampledShards below), one shard after the other for as
//              long as the epoch needs samples.
//   synthetic  num_samples black images with the caption "Dummy caption".
//
// Training images get OpenCLIP's train transform (RandomResizedCrop, bicubic,
// normalize), whose randomness is seeded per (seed, epoch, sample) -- the
// sample's row for CSV data, whatever the world size, (rank, position in the
// epoch) for streamed data -- so that a resumed epoch sees the same crops,
// and N ranks with batch B crop as one rank with batch N·B; validation images
// get the eval transform. Captions are tokenized with the model's tokenizer.
// Images that fail to decode are skipped, counted and logged.
//
// Errors: Create returns INVALID_ARGUMENT for bad options (unknown type,
// webdataset without num_samples, an empty dataset), or the data source's
// errors. Not thread-safe; uses `workers` threads of its own for decoding.

#ifndef OCLIP_TRAINING_DATA_PIPELINE_H_
#define OCLIP_TRAINING_DATA_PIPELINE_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/thread_pool.h"
#include "data/sample_source.h"
#include "model/image/preprocess.h"
#include "model/image/train_transform.h"
#include "model/tokenizer/tokenizer.h"

namespace oclip {

struct DataPipelineOptions {
  std::string data;                   // --train-data / --val-data
  std::string dataset_type = "auto";  // auto | csv | webdataset | synthetic
  std::string csv_img_key = "filepath";
  std::string csv_caption_key = "title";
  char csv_separator = '\t';
  int64_t num_samples = 0;  // --train-num-samples / --val-num-samples (0: all)
  int64_t batch_size = 64;
  int workers = 4;
  int rank = 0;
  int world_size = 1;
  uint64_t seed = 0;
  bool train = true;  // false: eval transform, file order, partial last batch.
  bool resampled = false;  // webdataset training only: draw shards with replacement.
  // Samples the webdataset shuffle buffer holds (1: stream order).
  size_t shuffle_buffer = 1000;
  PreprocessOptions preprocess;
  RandomResizedCropOptions crop;
};

// --dataset-resampled's shard stream for one rank and epoch: Next() draws a
// shard name uniformly at random from `shards` (with replacement, forever),
// from a generator seeded with (seed, epoch, rank), so the sequence is
// deterministic for a seed and differs between epochs and ranks. (OpenCLIP
// draws with Python's random.Random seeded from its DataLoader worker seed;
// its sequence cannot be reproduced outside PyTorch, only its law.)
// `shards` must not be empty.
class ResampledShards {
 public:
  ResampledShards(std::vector<std::string> shards, uint64_t seed, int64_t epoch, int rank);
  const std::string& Next();

 private:
  std::vector<std::string> shards_;
  std::mt19937_64 rng_;
};

struct Batch {
  torch::Tensor images;  // float [B, 3, S, S]
  torch::Tensor tokens;  // int64 [B, context_length]
};

class DataPipeline {
 public:
  // `tokenizer` must outlive the pipeline.
  static absl::StatusOr<std::unique_ptr<DataPipeline>> Create(const DataPipelineOptions& options,
                                                              const Tokenizer* tokenizer);
  ~DataPipeline();

  // Batches per epoch on this rank (equal on every rank for training), and
  // the samples they hold over all ranks.
  int64_t num_batches() const { return num_batches_; }
  int64_t num_samples() const;

  // Restarts iteration at the beginning of `epoch`.
  absl::Status StartEpoch(int epoch);
  // The next batch of the epoch, or false at its end.
  absl::StatusOr<bool> Next(Batch* batch);

  // Images skipped because they failed to decode, so far.
  int64_t failed_images() const { return failed_images_; }

 private:
  struct Item {
    std::string image_path;  // csv
    std::string image;       // webdataset bytes; both empty: synthetic black
    std::string caption;
    // Position in the listed dataset (csv), or -1 (streamed): seeds the crop.
    int64_t index = -1;
  };

  explicit DataPipeline(const DataPipelineOptions& options, const Tokenizer* tokenizer);
  absl::Status ListItems();
  absl::StatusOr<bool> NextItem(Item* item);
  absl::StatusOr<bool> NextStreamed(Item* item);
  absl::Status OpenStream();

  DataPipelineOptions options_;
  const Tokenizer* tokenizer_;
  bool streaming_ = false;
  bool synthetic_ = false;
  std::vector<Item> items_;           // csv / synthetic (all ranks' rows)
  std::vector<int64_t> epoch_order_;  // this rank's positions in items_
  size_t cursor_ = 0;
  std::unique_ptr<SampleSource> stream_;
  std::vector<std::string> shards_;            // resampled: the expanded list
  std::unique_ptr<ResampledShards> resampler_;  // resampled: this epoch's draws
  int64_t stream_samples_ = 0;                  // samples read from the open stream
  int64_t empty_draws_ = 0;                     // resampled: shards in a row without one
  std::vector<Item> shuffle_buffer_;
  std::mt19937_64 shuffle_rng_;
  bool stream_restarted_ = false;
  int64_t num_batches_ = 0;
  int64_t batches_done_ = 0;
  int64_t samples_done_ = 0;
  int epoch_ = 0;
  int64_t failed_images_ = 0;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace oclip

#endif  // OCLIP_TRAINING_DATA_PIPELINE_H_
