#include "embed/embed_job.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/logging.h"
#include "core/status.h"
#include "data/image_folder.h"
#include "data/shard_list.h"

namespace oclip {
namespace {

// Decode failures logged one by one before they are only counted.
constexpr int64_t kMaxDecodeWarnings = 20;

double NowSeconds() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

absl::Status MakeDirectories(const std::string& path) {
  std::string prefix;
  for (size_t pos = 0; pos != std::string::npos;) {
    pos = path.find('/', pos + 1);
    prefix = path.substr(0, pos);
    if (prefix.empty()) continue;
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::InternalError(
          absl::StrCat("cannot create directory ", prefix, ": ", std::strerror(errno)));
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a directory"));
  }
  return absl::OkStatus();
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::Status Rename(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", from, " to ", to, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Makes the renames in `dir` durable, so the done marker never survives a
// crash that loses the embedding files it vouches for.
void SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The "url" string of a sample's `.json` member, or null.
nlohmann::ordered_json UrlOf(const Sample& sample) {
  if (sample.metadata_json.empty()) return nullptr;
  const nlohmann::json parsed =
      nlohmann::json::parse(sample.metadata_json, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object()) {
    auto it = parsed.find("url");
    if (it != parsed.end() && it->is_string()) return it->get<std::string>();
  }
  return nullptr;
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, s / 60 % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

// One batch being decoded or encoded. Between Fill() and Wait() the pool's
// tasks own row i of `images` and `decode_status`; the job's thread touches
// neither until Wait() returns.
struct EmbedJob::Slot {
  torch::Tensor images;  // [batch_size, 3, S, S] float32, pinned when the model is on a GPU.
  std::vector<Sample> samples;
  int count = 0;
  std::vector<absl::Status> decode_status;
  absl::Mutex mu;
  int pending ABSL_GUARDED_BY(mu) = 0;
};

// The open temporary files of one partition and the rows buffered for them.
class EmbedJob::PartitionWriter {
 public:
  static absl::StatusOr<std::unique_ptr<PartitionWriter>> Create(const EmbedJobOptions& options,
                                                                 int partition, int64_t dim) {
    std::unique_ptr<PartitionWriter> writer(new PartitionWriter(options, partition, dim));
    if (options.enable_image) {
      OCLIP_ASSIGN_OR_RETURN(
          writer->image_,
          NpyRowWriter::Create(ImageEmbeddingPath(options.output_folder, partition) + ".tmp",
                               options.output_dtype, dim));
    }
    if (options.enable_text) {
      OCLIP_ASSIGN_OR_RETURN(
          writer->text_,
          NpyRowWriter::Create(TextEmbeddingPath(options.output_folder, partition) + ".tmp",
                               options.output_dtype, dim));
    }
    if (options.enable_metadata) {
      const std::string path = MetadataPath(options.output_folder, partition) + ".tmp";
      writer->metadata_ = std::fopen(path.c_str(), "wb");
      if (writer->metadata_ == nullptr) {
        return absl::InternalError(
            absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
      }
    }
    return writer;
  }

  // An uncommitted partition's temporary files are removed: they would never
  // be read, and a rerun rewrites them from scratch anyway.
  ~PartitionWriter() {
    if (committed_) return;
    if (metadata_ != nullptr) std::fclose(metadata_);
    image_.reset();
    text_.reset();
    for (const std::string& path : {ImageEmbeddingPath(options_.output_folder, partition_),
                                    TextEmbeddingPath(options_.output_folder, partition_),
                                    PartitionDonePath(options_, partition_)}) {
      std::remove((path + ".tmp").c_str());
    }
  }

  // Buffers `rows` rows: float32 embeddings ([rows, dim], null when that
  // output is disabled) and the samples they came from.
  absl::Status Append(const float* image, const float* text,
                      const std::vector<const Sample*>& samples) {
    const int64_t rows = static_cast<int64_t>(samples.size());
    if (image_ != nullptr) AppendRows(image, rows, &image_buffer_);
    if (text_ != nullptr) AppendRows(text, rows, &text_buffer_);
    if (metadata_ != nullptr) {
      for (const Sample* sample : samples) {
        nlohmann::ordered_json line;
        line["key"] = sample->key;
        line["caption"] = sample->has_caption ? nlohmann::ordered_json(sample->caption) : nullptr;
        line["url"] = UrlOf(*sample);
        line["shard"] = sample->shard;
        line["index_in_shard"] = sample->index_in_shard;
        line["partition"] = partition_;
        line["row"] = rows_;
        ++rows_;
        // Invalid UTF-8 in a caption or key becomes U+FFFD instead of throwing.
        metadata_buffer_ += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        metadata_buffer_ += '\n';
      }
    } else {
      rows_ += rows;
    }
    buffered_rows_ += rows;
    if (buffered_rows_ >= options_.write_batch_size) return Flush();
    return absl::OkStatus();
  }

  // Flushes, closes and renames the files into place, the done marker last.
  absl::Status Commit() {
    OCLIP_RETURN_IF_ERROR(Flush());
    std::vector<std::pair<std::string, std::string>> renames;
    if (image_ != nullptr) {
      OCLIP_RETURN_IF_ERROR(image_->Finish());
      const std::string path = ImageEmbeddingPath(options_.output_folder, partition_);
      renames.emplace_back(path + ".tmp", path);
    }
    if (text_ != nullptr) {
      OCLIP_RETURN_IF_ERROR(text_->Finish());
      const std::string path = TextEmbeddingPath(options_.output_folder, partition_);
      renames.emplace_back(path + ".tmp", path);
    }
    const std::string done = PartitionDonePath(options_, partition_);
    if (metadata_ != nullptr) {
      const bool ok = std::fflush(metadata_) == 0 && ::fsync(fileno(metadata_)) == 0;
      const bool closed = std::fclose(metadata_) == 0;
      metadata_ = nullptr;
      if (!ok || !closed) {
        return absl::InternalError(
            absl::StrCat("cannot write ", done, ".tmp: ", std::strerror(errno)));
      }
    } else {
      std::FILE* marker = std::fopen((done + ".tmp").c_str(), "wb");
      if (marker == nullptr || std::fclose(marker) != 0) {
        return absl::InternalError(
            absl::StrCat("cannot create ", done, ".tmp: ", std::strerror(errno)));
      }
    }
    for (const auto& [from, to] : renames) {
      OCLIP_RETURN_IF_ERROR(Rename(from, to));
      SyncDirectory(Dirname(to));
    }
    OCLIP_RETURN_IF_ERROR(Rename(done + ".tmp", done));
    SyncDirectory(Dirname(done));
    committed_ = true;
    return absl::OkStatus();
  }

  int64_t rows() const { return rows_; }

 private:
  PartitionWriter(const EmbedJobOptions& options, int partition, int64_t dim)
      : options_(options), partition_(partition), dim_(dim) {}

  void AppendRows(const float* values, int64_t rows, std::string* buffer) const {
    const size_t count = static_cast<size_t>(rows * dim_);
    if (options_.output_dtype == NpyDtype::kFloat32) {
      buffer->append(reinterpret_cast<const char*>(values), count * sizeof(float));
      return;
    }
    const size_t start = buffer->size();
    buffer->resize(start + count * sizeof(uint16_t));
    char* out = buffer->data() + start;
    for (size_t i = 0; i < count; ++i) {
      const uint16_t half = FloatToHalf(values[i]);
      std::memcpy(out + 2 * i, &half, 2);
    }
  }

  absl::Status Flush() {
    const int width = NpyDtypeBytes(options_.output_dtype);
    if (image_ != nullptr) {
      OCLIP_RETURN_IF_ERROR(image_->Append(
          image_buffer_.data(), static_cast<int64_t>(image_buffer_.size()) / (dim_ * width)));
      image_buffer_.clear();
    }
    if (text_ != nullptr) {
      OCLIP_RETURN_IF_ERROR(text_->Append(
          text_buffer_.data(), static_cast<int64_t>(text_buffer_.size()) / (dim_ * width)));
      text_buffer_.clear();
    }
    if (metadata_ != nullptr && !metadata_buffer_.empty()) {
      if (std::fwrite(metadata_buffer_.data(), 1, metadata_buffer_.size(), metadata_) !=
          metadata_buffer_.size()) {
        return absl::InternalError(absl::StrCat("cannot write ",
                                                MetadataPath(options_.output_folder, partition_),
                                                ".tmp: ", std::strerror(errno)));
      }
      metadata_buffer_.clear();
    }
    buffered_rows_ = 0;
    return absl::OkStatus();
  }

  const EmbedJobOptions& options_;
  const int partition_;
  const int64_t dim_;
  std::unique_ptr<NpyRowWriter> image_;
  std::unique_ptr<NpyRowWriter> text_;
  std::FILE* metadata_ = nullptr;
  std::string image_buffer_, text_buffer_, metadata_buffer_;
  int64_t buffered_rows_ = 0;
  int64_t rows_ = 0;
  bool committed_ = false;
};

std::string EmbedJobStats::ToJson() const {
  nlohmann::ordered_json json;
  json["samples"] = samples;
  json["samples_read"] = samples_read;
  nlohmann::ordered_json by_kind = nlohmann::ordered_json::object();
  int64_t total = 0;
  for (int k = 0; k < kNumFailureKinds; ++k) {
    by_kind[std::string(FailureKindName(static_cast<FailureKind>(k)))] = failures[k];
    total += failures[k];
  }
  json["failures"] = by_kind;
  json["failures_total"] = total;
  json["seconds"] = seconds;
  json["samples_per_second"] = seconds > 0 ? static_cast<double>(samples) / seconds : 0.0;
  json["worker_index"] = worker_index;
  json["num_workers"] = num_workers;
  json["partitions_total"] = partitions_total;
  json["partitions_assigned"] = partitions_assigned;
  json["partitions_done"] = partitions_done;
  json["partitions_skipped"] = partitions_skipped;
  json["partitions_failed"] = partitions_failed;
  json["partitions_remaining"] = partitions_assigned - partitions_done - partitions_skipped;
  return json.dump();
}

std::string ImageEmbeddingPath(const std::string& output_folder, int partition) {
  return absl::StrCat(output_folder, "/img_emb/img_emb_", partition, ".npy");
}
std::string TextEmbeddingPath(const std::string& output_folder, int partition) {
  return absl::StrCat(output_folder, "/text_emb/text_emb_", partition, ".npy");
}
std::string MetadataPath(const std::string& output_folder, int partition) {
  return absl::StrCat(output_folder, "/metadata/metadata_", partition, ".jsonl");
}
std::string PartitionDonePath(const EmbedJobOptions& options, int partition) {
  if (options.enable_metadata) return MetadataPath(options.output_folder, partition);
  return absl::StrCat(options.output_folder, "/_done/partition_", partition);
}

absl::StatusOr<int> DefaultPartitionCount(const EmbedJobOptions& options) {
  bool webdataset = options.input_format == DatasetType::kWebDataset;
  if (options.input_format == DatasetType::kAuto) {
    // The same guess OpenSampleSource makes: a folder, a .csv/.tsv, or shards.
    struct stat st;
    const bool folder = ::stat(options.input_dataset.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    const std::string lower = absl::AsciiStrToLower(options.input_dataset);
    webdataset = !folder && !absl::EndsWith(lower, ".csv") && !absl::EndsWith(lower, ".tsv");
  }
  if (!webdataset) return 1;
  OCLIP_ASSIGN_OR_RETURN(std::vector<std::string> shards, ExpandShardList(options.input_dataset));
  if (shards.size() > static_cast<size_t>(1) << 30) {
    return absl::InvalidArgumentError("too many shards for one partition each");
  }
  return static_cast<int>(shards.size());
}

absl::StatusOr<std::unique_ptr<EmbedJob>> EmbedJob::Create(
    EmbedJobOptions options, std::shared_ptr<ClipModel> model,
    std::shared_ptr<const Tokenizer> tokenizer) {
  if (options.input_dataset.empty()) {
    return absl::InvalidArgumentError("the input dataset is required");
  }
  if (options.output_folder.empty()) {
    return absl::InvalidArgumentError("the output folder is required");
  }
  if (!options.enable_image && !options.enable_text) {
    return absl::InvalidArgumentError("nothing to embed: enable images, texts or both");
  }
  if (model == nullptr) return absl::InvalidArgumentError("no model");
  if (options.enable_text && tokenizer == nullptr) {
    return absl::InvalidArgumentError("text embedding needs a tokenizer");
  }
  if (options.batch_size < 1) return absl::InvalidArgumentError("batch size must be >= 1");
  if (options.write_batch_size < 1) {
    return absl::InvalidArgumentError("write batch size must be >= 1");
  }
  if (options.output_partition_count < 0) {
    return absl::InvalidArgumentError("output partition count must be >= 0");
  }
  if (options.max_partitions < 0) return absl::InvalidArgumentError("max partitions must be >= 0");
  if (options.num_workers < 1 || options.worker_index < 0 ||
      options.worker_index >= options.num_workers) {
    return absl::InvalidArgumentError(absl::StrCat("worker index ", options.worker_index,
                                                   " is outside [0, ", options.num_workers, ")"));
  }
  int partition_count = options.output_partition_count;
  if (partition_count == 0) {
    OCLIP_ASSIGN_OR_RETURN(partition_count, DefaultPartitionCount(options));
  }
  if (partition_count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("no partitions: the input \"", options.input_dataset, "\" has no shards"));
  }
  OCLIP_RETURN_IF_ERROR(MakeDirectories(options.output_folder));
  if (options.enable_image)
    OCLIP_RETURN_IF_ERROR(MakeDirectories(options.output_folder + "/img_emb"));
  if (options.enable_text)
    OCLIP_RETURN_IF_ERROR(MakeDirectories(options.output_folder + "/text_emb"));
  OCLIP_RETURN_IF_ERROR(MakeDirectories(options.enable_metadata
                                            ? options.output_folder + "/metadata"
                                            : options.output_folder + "/_done"));
  std::array<std::unique_ptr<Slot>, 2> slots;
  const int64_t s = options.preprocess.image_size;
  try {
    for (auto& slot : slots) {
      slot = std::make_unique<Slot>();
      slot->samples.resize(options.batch_size);
      slot->decode_status.resize(options.batch_size);
      if (options.enable_image) {
        // Pinned host memory lets the one host-to-device copy per batch run async.
        const bool pin = model->device().is_cuda();
        slot->images = torch::empty({options.batch_size, 3, s, s},
                                    torch::TensorOptions().dtype(torch::kFloat).pinned_memory(pin));
      }
    }
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate two batches of ", options.batch_size, " images: ", e.what()));
  }
  return std::unique_ptr<EmbedJob>(new EmbedJob(std::move(options), std::move(model),
                                                std::move(tokenizer), partition_count,
                                                std::move(slots)));
}

EmbedJob::EmbedJob(EmbedJobOptions options, std::shared_ptr<ClipModel> model,
                   std::shared_ptr<const Tokenizer> tokenizer, int partition_count,
                   std::array<std::unique_ptr<Slot>, 2> slots)
    : options_(std::move(options)),
      model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      partition_count_(partition_count),
      slots_(std::move(slots)),
      pool_(std::make_unique<ThreadPool>(options_.num_prepro_workers)) {
  for (int p = options_.worker_index; p < partition_count_; p += options_.num_workers) {
    partitions_.push_back(p);
  }
}

EmbedJob::~EmbedJob() {
  // Decoding tasks write into the slots: drain them before the slots go.
  pool_.reset();
}

absl::StatusOr<EmbedJobStats> EmbedJob::Run() {
  torch::InferenceMode inference;
  EmbedJobStats stats;
  stats.worker_index = options_.worker_index;
  stats.num_workers = options_.num_workers;
  stats.partitions_total = partition_count_;
  stats.partitions_assigned = static_cast<int>(partitions_.size());
  start_time_ = last_log_time_ = NowSeconds();
  expected_samples_ = -1;
  LogInfo(absl::StrFormat("embed: worker %d of %d, %d of %d partitions, output %s",
                          options_.worker_index, options_.num_workers, partitions_.size(),
                          partition_count_, options_.output_folder));
  std::vector<int> todo;
  for (int p : partitions_) {
    if (FileExists(PartitionDonePath(options_, p))) {
      ++stats.partitions_skipped;
    } else {
      todo.push_back(p);
    }
  }
  if (stats.partitions_skipped > 0) {
    LogInfo(
        absl::StrFormat("embed: %d partitions already done, skipped", stats.partitions_skipped));
  }
  if (options_.max_partitions > 0 && static_cast<int>(todo.size()) > options_.max_partitions) {
    todo.resize(options_.max_partitions);
  }
  // An image folder knows its size up front: partition p holds the files
  // p, p + P, ..., so the ETA can be exact.
  struct stat st;
  const bool folder = options_.input_format == DatasetType::kImageFolder ||
                      (options_.input_format == DatasetType::kAuto &&
                       ::stat(options_.input_dataset.c_str(), &st) == 0 && S_ISDIR(st.st_mode));
  if (!todo.empty() && folder) {
    OpenSourceOptions open;
    open.type = options_.input_format;
    open.csv = options_.csv;
    absl::StatusOr<std::unique_ptr<SampleSource>> probe =
        OpenSampleSource(options_.input_dataset, open);
    if (probe.ok()) {
      if (const auto* folder = dynamic_cast<const ImageFolderSource*>(probe->get())) {
        const int64_t n = static_cast<int64_t>(folder->files().size());
        expected_samples_ = 0;
        for (int p : todo) {
          if (p < n) expected_samples_ += (n - p + partition_count_ - 1) / partition_count_;
        }
      }
    }
  }
  for (int p : todo) {
    OCLIP_RETURN_IF_ERROR(EmbedPartition(p, &stats));
  }
  stats.seconds = NowSeconds() - start_time_;
  MaybeLogProgress(stats, /*force=*/true);
  return stats;
}

absl::Status EmbedJob::EmbedPartition(int partition, EmbedJobStats* stats) {
  OpenSourceOptions open;
  open.type = options_.input_format;
  open.worker_index = partition;
  open.num_workers = partition_count_;
  open.csv = options_.csv;
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<SampleSource> source,
                         OpenSampleSource(options_.input_dataset, open));
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<PartitionWriter> writer,
                         PartitionWriter::Create(options_, partition, model_->config().embed_dim));

  Slot* current = slots_[0].get();
  Slot* next = slots_[1].get();
  bool exhausted = false;
  absl::Status status = Fill(*source, *current, &exhausted);
  while (status.ok() && current->count > 0) {
    // Read and start decoding batch k+1 before the model takes batch k.
    next->count = 0;
    if (!exhausted) status = Fill(*source, *next, &exhausted);
    Wait(*current);
    if (status.ok()) status = EncodeAndWrite(*current, partition, *writer, stats);
    std::swap(current, next);
  }
  // Whatever happened, no task may still write into a slot when they are
  // refilled for the next partition.
  Wait(*current);
  Wait(*next);
  const SourceStats& source_stats = source->stats();
  stats->samples_read += source_stats.samples;
  for (int k = 0; k < kNumFailureKinds; ++k) stats->failures[k] += source_stats.failures[k];
  OCLIP_RETURN_IF_ERROR(status);
  // A shard that could not be opened or whose `pipe:` command failed is most
  // likely a storage or network hiccup, not bad data: committing would turn
  // it into a permanently empty partition. Leave the partition unfinished so
  // that a rerun retries it (truncated/corrupt shards are data: committed).
  for (const ShardStats& shard : source_stats.shards) {
    if (!shard.status.ok() && (shard.failure_count(FailureKind::kMissingFile) > 0 ||
                               shard.failure_count(FailureKind::kUnreadableFile) > 0 ||
                               shard.failure_count(FailureKind::kCommandFailed) > 0)) {
      LogError(absl::StrFormat("embed: partition %d left unfinished (rerun to retry): %s",
                               partition, shard.status.ToString()));
      ++stats->partitions_failed;
      return absl::OkStatus();  // The writer's destructor removes the temporary files.
    }
  }
  OCLIP_RETURN_IF_ERROR(writer->Commit());
  ++stats->partitions_done;
  LogInfo(absl::StrFormat("embed: partition %d done: %d rows, %s", partition, writer->rows(),
                          source_stats.ToString()));
  return absl::OkStatus();
}

absl::Status EmbedJob::Fill(SampleSource& source, Slot& slot, bool* exhausted) {
  slot.count = 0;
  while (slot.count < options_.batch_size) {
    OCLIP_ASSIGN_OR_RETURN(bool more, source.Next(&slot.samples[slot.count]));
    if (!more) {
      *exhausted = true;
      break;
    }
    ++slot.count;
  }
  if (!options_.enable_image || slot.count == 0) return absl::OkStatus();
  {
    absl::MutexLock lock(&slot.mu);
    slot.pending = slot.count;
  }
  float* base = slot.images.data_ptr<float>();
  const int64_t stride =
      3 * static_cast<int64_t>(options_.preprocess.image_size) * options_.preprocess.image_size;
  for (int i = 0; i < slot.count; ++i) {
    pool_->Schedule([this, &slot, i, out = base + i * stride] {
      slot.decode_status[i] = PreprocessImageBytes(slot.samples[i].image, options_.preprocess, out);
      absl::MutexLock lock(&slot.mu);
      --slot.pending;
    });
  }
  return absl::OkStatus();
}

void EmbedJob::Wait(Slot& slot) {
  slot.mu.LockWhen(absl::Condition(
      +[](int* pending) { return *pending == 0; }, &slot.pending));
  slot.mu.Unlock();
}

absl::Status EmbedJob::EncodeAndWrite(Slot& slot, int partition, PartitionWriter& writer,
                                      EmbedJobStats* stats) {
  std::vector<int64_t> keep;
  keep.reserve(slot.count);
  for (int i = 0; i < slot.count; ++i) {
    if (options_.enable_image && !slot.decode_status[i].ok()) {
      stats->failures[static_cast<int>(FailureKind::kUnreadableImage)]++;
      if (decode_warnings_++ < kMaxDecodeWarnings) {
        LogWarning(absl::StrFormat("embed: partition %d: skipping %s in %s: %s", partition,
                                   slot.samples[i].key, slot.samples[i].shard,
                                   slot.decode_status[i].message()));
      }
      continue;
    }
    keep.push_back(i);
  }
  const int64_t rows = static_cast<int64_t>(keep.size());
  if (rows > 0) {
    const int64_t dim = model_->config().embed_dim;
    torch::Tensor image_features, text_features;
    try {
      if (options_.enable_image) {
        torch::Tensor batch = rows == slot.count
                                  ? slot.images.narrow(0, 0, rows)
                                  : slot.images.index_select(0, torch::tensor(keep, torch::kLong));
        OCLIP_ASSIGN_OR_RETURN(
            image_features, model_->EncodeImage(batch.to(model_->device(), /*non_blocking=*/true),
                                                /*normalize=*/true));
        image_features = image_features.to(torch::kCPU, torch::kFloat).contiguous();
      }
      if (options_.enable_text) {
        std::vector<std::string> captions;
        captions.reserve(rows);
        for (int64_t i : keep) captions.push_back(slot.samples[i].caption);
        std::vector<int64_t> ids = tokenizer_->Tokenize(captions);
        torch::Tensor tokens =
            torch::from_blob(ids.data(), {rows, tokenizer_->context_length()}, torch::kLong)
                .to(model_->device());
        OCLIP_ASSIGN_OR_RETURN(text_features, model_->EncodeText(tokens, /*normalize=*/true));
        text_features = text_features.to(torch::kCPU, torch::kFloat).contiguous();
      }
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("embedding a batch of partition ", partition, " failed: ", e.what()));
    }
    for (const torch::Tensor& features : {image_features, text_features}) {
      if (features.defined() &&
          (features.dim() != 2 || features.size(0) != rows || features.size(1) != dim)) {
        return absl::InternalError(absl::StrCat("the model returned ", features.dim(),
                                                "-D features of ", features.numel(),
                                                " values, expected [", rows, ", ", dim, "]"));
      }
    }
    std::vector<const Sample*> samples;
    samples.reserve(rows);
    for (int64_t i : keep) samples.push_back(&slot.samples[i]);
    OCLIP_RETURN_IF_ERROR(writer.Append(
        image_features.defined() ? image_features.data_ptr<float>() : nullptr,
        text_features.defined() ? text_features.data_ptr<float>() : nullptr, samples));
    stats->samples += rows;
  }
  MaybeLogProgress(*stats, /*force=*/false);
  return absl::OkStatus();
}

void EmbedJob::MaybeLogProgress(const EmbedJobStats& stats, bool force) {
  const double now = NowSeconds();
  if (!force && now - last_log_time_ < options_.progress_interval_seconds) return;
  last_log_time_ = now;
  const double elapsed = std::max(now - start_time_, 1e-9);
  const double rate = static_cast<double>(stats.samples) / elapsed;
  std::string line = absl::StrFormat(
      "embed: %d samples embedded, %d failures, %.1f samples/s, %d/%d partitions done",
      stats.samples,
      [&] {
        int64_t n = 0;
        for (int64_t f : stats.failures) n += f;
        return n;
      }(),
      rate, stats.partitions_done + stats.partitions_skipped, stats.partitions_assigned);
  // Samples handled so far include failed ones: both use up the expected total.
  int64_t handled = stats.samples;
  handled += stats.failure_count(FailureKind::kUnreadableImage);
  if (expected_samples_ > 0 && rate > 0 && !force) {
    const double left = static_cast<double>(std::max<int64_t>(expected_samples_ - handled, 0));
    absl::StrAppend(&line, absl::StrFormat(", %d of %d, ETA %s", handled, expected_samples_,
                                           FormatDuration(left / rate)));
  }
  LogInfo(line);
}

}  // namespace oclip
