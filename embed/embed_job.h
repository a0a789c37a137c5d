// The batch embedding job behind `oclip embed`, after clip-retrieval's
// `inference`: read a dataset (webdataset tars, a CSV/TSV file, an image
// folder), embed every image and caption with a CLIP model, and write
// partitioned outputs that a FAISS index builder (index/) or numpy reads:
//
//   OUTPUT/img_emb/img_emb_{i}.npy        [rows_i, embed_dim] image embeddings
//   OUTPUT/text_emb/text_emb_{i}.npy      [rows_i, embed_dim] caption embeddings
//   OUTPUT/metadata/metadata_{i}.jsonl    rows_i lines, one JSON object each
//
// Embeddings are L2-normalized, float16 ('<f2', clip-retrieval's default) or
// float32. Row r of the three files of partition i is the same sample. Each
// metadata line is {"key", "caption", "url", "shard", "index_in_shard",
// "partition", "row"} in that order; "url" is the sample's `.json` member's
// "url" string, null when absent; "caption" is null for a sample without one.
// clip-retrieval writes metadata as Parquet; that needs Apache Arrow, which is
// not packaged here, hence JSON Lines.
//
// Partitions. Partition i of P is what OpenSampleSource(input, {worker_index
// = i, num_workers = P}) yields: every P-th shard for webdataset, every P-th
// row of a CSV, every P-th file of a folder. P defaults to the number of
// shards for webdataset and to 1 otherwise. Job worker w of W takes the
// partitions i with i % W == w, so W workers together write exactly the
// files one worker would, byte for byte (batches never span partitions).
//
// Resumability. A partition's files are written under "<name>.tmp" and renamed
// when complete, the metadata file last: a partition is done iff its
// metadata file exists (with --enable-metadata=false: iff the empty marker
// OUTPUT/_done/partition_{i} exists, created last instead). Done partitions
// are skipped, so a restarted job finishes the rest and a killed worker
// leaves at most "*.tmp" files and renamed embedding files of an unfinished
// partition, both of which the next run overwrites. Outputs are deterministic:
// the same input and options give byte-identical files. Restarts must use the
// same dataset, partition count and enable/dtype options.
//
// Unreadable shards. A webdataset shard that cannot be opened or read
// (missing, unreadable, a failing `pipe:` command) leaves its partition
// unfinished instead of committing it without those samples: such failures
// are usually transient, and a rerun retries the partition. Run() still goes
// on with the other partitions and reports them as partitions_failed.
// Truncated or corrupt archives are data, not outages: their partitions are
// committed with the samples before the damage, and the failures counted.
//
// Samples. A sample whose image fails to decode is skipped (no row) and
// counted as FailureKind::kUnreadableImage; the sources count their own
// failures (missing files, corrupt or truncated shards, ...). A sample without
// a caption gets the embedding of the empty string (OpenCLIP tokenizes "" to
// start/end tokens), so the text and image files always have the same rows.
//
// Pipeline. The calling thread reads samples and runs the model; a ThreadPool
// of `num_prepro_workers` threads decodes and preprocesses images straight
// into slots of one of two batch tensors, so decoding batch k+1 overlaps the
// model on batch k. Captions are tokenized on the calling thread.
//
// Ownership and threads: the job owns its pool (joined when the job is
// destroyed) and shares the model; Run() is called from one thread at a time
// and sets InferenceMode itself. Errors: INVALID_ARGUMENT for bad options, the
// source's errors for a dataset that cannot be opened, INTERNAL for write
// failures and LibTorch failures.

#ifndef OCLIP_EMBED_EMBED_JOB_H_
#define OCLIP_EMBED_EMBED_JOB_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/thread_pool.h"
#include "data/open_source.h"
#include "data/sample_source.h"
#include "embed/npy_rows.h"
#include "model/clip_model.h"
#include "model/image/preprocess.h"
#include "model/tokenizer/tokenizer.h"

namespace oclip {

struct EmbedJobOptions {
  std::string input_dataset;  // Shard list, CSV file or folder.
  DatasetType input_format = DatasetType::kAuto;
  CsvOptions csv;             // image_key, caption_key, separator (path is set from input_dataset).
  std::string output_folder;  // Created if missing.
  bool enable_image = true;
  bool enable_text = true;
  bool enable_metadata = true;
  NpyDtype output_dtype = NpyDtype::kFloat16;
  // P; 0 = the default (shards for webdataset, else 1).
  int output_partition_count = 0;
  // Rows buffered in memory per partition before they are appended to its
  // temporary files.
  int64_t write_batch_size = 10000;
  int batch_size = 256;        // Samples per forward pass.
  int num_prepro_workers = 0;  // Decoding threads; 0 = every core.
  int worker_index = 0;        // This worker, of num_workers.
  int num_workers = 1;
  // Stop after embedding this many partitions (skipped ones not counted);
  // 0 = no limit. For spreading a job over time-limited allocations, and how
  // tests interrupt a job deterministically.
  int max_partitions = 0;
  PreprocessOptions preprocess;  // The model's image size and normalization.
  double progress_interval_seconds = 10;
};

struct EmbedJobStats {
  int64_t samples = 0;       // Rows written (samples embedded).
  int64_t samples_read = 0;  // Samples the sources delivered.
  std::array<int64_t, kNumFailureKinds> failures{};
  double seconds = 0;
  int worker_index = 0;
  int num_workers = 1;
  int partitions_total = 0;     // P.
  int partitions_assigned = 0;  // This worker's share of P.
  int partitions_done = 0;      // Embedded by this run.
  int partitions_skipped = 0;   // Already done by an earlier run.
  // Left unfinished because a shard could not be read (missing, unreadable,
  // failed `pipe:` command): a rerun retries them. Counted in remaining.
  int partitions_failed = 0;

  int64_t failure_count(FailureKind kind) const { return failures[static_cast<int>(kind)]; }
  // One JSON object (one line): the fields above, failures by FailureKindName
  // (every kind, zeros included), and samples_per_second.
  std::string ToJson() const;
};

// The files of partition `i` under `output_folder`.
std::string ImageEmbeddingPath(const std::string& output_folder, int partition);
std::string TextEmbeddingPath(const std::string& output_folder, int partition);
std::string MetadataPath(const std::string& output_folder, int partition);
// The file whose existence marks partition `i` done (see the header comment).
std::string PartitionDonePath(const EmbedJobOptions& options, int partition);

// P for `options` when output_partition_count is 0.
absl::StatusOr<int> DefaultPartitionCount(const EmbedJobOptions& options);

class EmbedJob {
 public:
  // `tokenizer` may be null when enable_text is false. INVALID_ARGUMENT for
  // bad options; the output folder is created here.
  static absl::StatusOr<std::unique_ptr<EmbedJob>> Create(
      EmbedJobOptions options, std::shared_ptr<ClipModel> model,
      std::shared_ptr<const Tokenizer> tokenizer);
  ~EmbedJob();

  // Embeds this worker's unfinished partitions. Stops at the first error
  // (the failing partition stays unfinished).
  absl::StatusOr<EmbedJobStats> Run();

  int partition_count() const { return partition_count_; }
  // This worker's partitions, ascending.
  const std::vector<int>& partitions() const { return partitions_; }

 private:
  struct Slot;
  class PartitionWriter;

  EmbedJob(EmbedJobOptions options, std::shared_ptr<ClipModel> model,
           std::shared_ptr<const Tokenizer> tokenizer, int partition_count,
           std::array<std::unique_ptr<Slot>, 2> slots);

  absl::Status EmbedPartition(int partition, EmbedJobStats* stats);
  // Reads up to batch_size samples into `slot` and schedules their decoding.
  absl::Status Fill(SampleSource& source, Slot& slot, bool* exhausted);
  // Blocks until the decoding tasks of `slot` are finished.
  void Wait(Slot& slot);
  absl::Status EncodeAndWrite(Slot& slot, int partition, PartitionWriter& writer,
                              EmbedJobStats* stats);
  void MaybeLogProgress(const EmbedJobStats& stats, bool force);

  const EmbedJobOptions options_;
  const std::shared_ptr<ClipModel> model_;
  const std::shared_ptr<const Tokenizer> tokenizer_;
  const int partition_count_;
  std::vector<int> partitions_;
  // Declared before the pool: the pool is destroyed (drained) first, while
  // the slots its tasks write into still exist.
  std::array<std::unique_ptr<Slot>, 2> slots_;
  std::unique_ptr<ThreadPool> pool_;

  // Progress reporting.
  double start_time_ = 0;
  double last_log_time_ = 0;
  int64_t expected_samples_ = -1;  // Known for image folders; -1 otherwise.
  int64_t decode_warnings_ = 0;
};

}  // namespace oclip

#endif  // OCLIP_EMBED_EMBED_JOB_H_
