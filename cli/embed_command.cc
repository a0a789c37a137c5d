// `oclip embed`: the batch embedding job (embed/embed_job.h), with
// clip-retrieval `inference`'s flag names.

#include <cstdlib>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/logging.h"
#include "core/status.h"
#include "embed/embed_job.h"
#include "embed/worker_assignment.h"
#include "model/inference_precision.h"

namespace oclip::cli {
namespace {

struct EmbedFlags {
  ModelFlags model;
  std::string input_dataset;
  std::string input_format = "auto";
  std::string output_folder;
  bool enable_text = true;
  bool enable_image = true;
  bool enable_metadata = true;
  int64_t output_partition_count = 0;
  int64_t write_batch_size = 10000;
  int64_t batch_size = 256;
  int64_t num_prepro_workers = 0;
  // -1: not given (the scheduler's environment decides).
  int64_t worker_index = -1;
  int64_t num_workers = -1;
  std::string csv_img_key = "filepath";
  std::string csv_caption_key = "title";
  std::string csv_separator = "\\t";
  std::string output_dtype = "float16";
  PrecisionFlag precision;
  int64_t max_partitions = 0;
};

// "\t" as typed on a command line, or one literal character.
absl::StatusOr<char> ParseSeparator(const std::string& text) {
  if (text == "\\t" || text == "\t" || text == "tab") return '\t';
  if (text.size() == 1) return text[0];
  return absl::InvalidArgumentError(
      absl::StrCat("--csv-separator must be one character or \\t, got \"", text, "\""));
}

absl::StatusOr<int> ToInt(int64_t value, const char* flag) {
  if (value < 0 || value > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", value, " is out of range"));
  }
  return static_cast<int>(value);
}

absl::Status Embed(const EmbedFlags& flags) {
  if (flags.input_dataset.empty()) return absl::InvalidArgumentError("--input-dataset is required");
  if (flags.output_folder.empty()) return absl::InvalidArgumentError("--output-folder is required");
  OCLIP_ASSIGN_OR_RETURN(const InferencePrecision precision, flags.precision.Parse());
  EmbedJobOptions options;
  options.input_dataset = flags.input_dataset;
  // clip-retrieval calls an image folder "files".
  OCLIP_ASSIGN_OR_RETURN(
      options.input_format,
      ParseDatasetType(flags.input_format == "files" ? "imagefolder" : flags.input_format));
  options.csv.image_key = flags.csv_img_key;
  options.csv.caption_key = flags.csv_caption_key;
  OCLIP_ASSIGN_OR_RETURN(options.csv.separator, ParseSeparator(flags.csv_separator));
  options.output_folder = flags.output_folder;
  options.enable_image = flags.enable_image;
  options.enable_text = flags.enable_text;
  options.enable_metadata = flags.enable_metadata;
  absl::StatusOr<NpyDtype> dtype = ParseNpyDtype(flags.output_dtype);
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--output-dtype: ", dtype.status().message()));
  }
  options.output_dtype = *dtype;
  OCLIP_ASSIGN_OR_RETURN(options.output_partition_count,
                         ToInt(flags.output_partition_count, "output-partition-count"));
  if (flags.write_batch_size < 1) {
    return absl::InvalidArgumentError("--write-batch-size must be >= 1");
  }
  options.write_batch_size = flags.write_batch_size;
  if (flags.batch_size < 1) return absl::InvalidArgumentError("--batch-size must be >= 1");
  OCLIP_ASSIGN_OR_RETURN(options.batch_size, ToInt(flags.batch_size, "batch-size"));
  OCLIP_ASSIGN_OR_RETURN(options.num_prepro_workers,
                         ToInt(flags.num_prepro_workers, "num-prepro-workers"));
  OCLIP_ASSIGN_OR_RETURN(options.max_partitions, ToInt(flags.max_partitions, "max-partitions"));

  std::optional<int> index, count;
  if (flags.worker_index >= 0) {
    OCLIP_ASSIGN_OR_RETURN(index, ToInt(flags.worker_index, "worker-index"));
  }
  if (flags.num_workers >= 0) {
    OCLIP_ASSIGN_OR_RETURN(count, ToInt(flags.num_workers, "num-workers"));
  }
  OCLIP_ASSIGN_OR_RETURN(WorkerAssignment worker,
                         ResolveWorkerAssignment(index, count, ProcessEnv()));
  options.worker_index = worker.index;
  options.num_workers = worker.count;

  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, flags.model.LoadModel());
  OCLIP_ASSIGN_OR_RETURN(PreparedKernels kernels, PrepareForInference(*model, precision));
  LogInfo(absl::StrCat("embed: ", InferencePrecisionName(precision), " kernels ",
                       kernels.linear_kernel, ", ", kernels.conv_kernel, ", attention ",
                       kernels.attention_kernel));
  std::shared_ptr<const Tokenizer> tokenizer;
  if (options.enable_text) {
    OCLIP_ASSIGN_OR_RETURN(tokenizer, flags.model.LoadTokenizer(model->config()));
  }
  options.preprocess = flags.model.Preprocessing(model->config());
  LogInfo(absl::StrCat("embed: worker ", worker.index, " of ", worker.count, " (from ",
                       worker.source, ")"));
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<EmbedJob> job,
                         EmbedJob::Create(std::move(options), model, tokenizer));
  OCLIP_ASSIGN_OR_RETURN(EmbedJobStats stats, job->Run());
  std::cout << stats.ToJson() << std::endl;
  if (stats.partitions_failed > 0) {
    // Non-zero exit so that a scheduler retries the worker; the rerun skips
    // the partitions that are done.
    return absl::UnavailableError(absl::StrCat(stats.partitions_failed,
                                               " partitions had unreadable shards and are "
                                               "unfinished; run again to retry them"));
  }
  return absl::OkStatus();
}

}  // namespace

int RunEmbed(int argc, char** argv) {
  EmbedFlags values;
  FlagSet flags("embed",
                "Embeds a dataset's images and captions in partitions, as clip-retrieval's\n"
                "inference does, and writes under --output-folder:\n"
                "  img_emb/img_emb_{i}.npy, text_emb/text_emb_{i}.npy  normalized embeddings\n"
                "  metadata/metadata_{i}.jsonl  one JSON object per row: key, caption, url,\n"
                "    shard, index_in_shard, partition, row (JSON Lines, not clip-retrieval's\n"
                "    Parquet: Apache Arrow is not available here)\n"
                "Partition i of P holds every P-th shard (webdataset), CSV row or file\n"
                "(folder). A partition is done once its metadata file exists (with\n"
                "--enable-metadata=false: _done/partition_{i}); reruns skip done partitions,\n"
                "so an interrupted job is resumed by running it again with the same flags.\n"
                "Worker index/count: the flags, else JOB_COMPLETION_INDEX (+ --num-workers or\n"
                "OCLIP_NUM_WORKERS), else SLURM_ARRAY_TASK_ID/COUNT, else SLURM_PROCID/NTASKS.\n"
                "Samples whose image cannot be decoded are skipped; a sample without a\n"
                "caption gets the embedding of \"\". A shard that cannot be read (missing,\n"
                "failing pipe:) leaves its partition unfinished and the exit code 1: rerun.\n"
                "Prints a stats JSON line when done.");
  values.model.Register(flags);
  flags.AddString("input-dataset", &values.input_dataset,
                  "webdataset shard list (brace patterns, \"::\", pipe:), CSV/TSV file, or "
                  "image folder");
  flags.AddString("input-format", &values.input_format,
                  "files (an image folder), webdataset, csv, or auto (default)");
  flags.AddString("output-folder", &values.output_folder, "where the partitions are written");
  flags.AddBool("enable-text", &values.enable_text, "embed captions (default true)");
  flags.AddBool("enable-image", &values.enable_image, "embed images (default true)");
  flags.AddBool("enable-metadata", &values.enable_metadata,
                "write metadata/metadata_{i}.jsonl (default true)");
  flags.AddInt("output-partition-count", &values.output_partition_count,
               "partitions P (default: the number of shards for webdataset, else 1)");
  flags.AddInt("write-batch-size", &values.write_batch_size,
               "rows buffered before they are appended to a partition's files (default 10000)");
  flags.AddInt("batch-size", &values.batch_size, "samples per forward pass (default 256)");
  flags.AddInt("num-prepro-workers", &values.num_prepro_workers,
               "image decoding threads (default: all cores)");
  flags.AddInt("worker-index", &values.worker_index,
               "this worker: takes partitions i with i % num-workers == worker-index");
  flags.AddInt("num-workers", &values.num_workers, "number of workers (default 1)");
  flags.AddString("csv-img-key", &values.csv_img_key, "CSV image path column (default filepath)");
  flags.AddString("csv-caption-key", &values.csv_caption_key, "CSV caption column (default title)");
  flags.AddString("csv-separator", &values.csv_separator, "CSV separator (default \\t)");
  flags.AddString("output-dtype", &values.output_dtype, "float16 (default) or float32");
  values.precision.Register(flags);
  flags.AddInt("max-partitions", &values.max_partitions,
               "embed at most N partitions in this run, then exit (0 = all); run again to "
               "resume");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  if (absl::Status status = Embed(values); !status.ok()) {
    std::cerr << "oclip embed: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
