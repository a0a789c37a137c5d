// `oclip bench embed`: is the embedding job's pipeline (read, decode on a
// pool, batch, model, write) as fast as the model alone? Measures, in one
// process on one model, the offline image throughput of the model at the
// job's batch size (random input tensors, nothing else running), then
// `oclip embed`'s throughput over a folder of N copies of one image file,
// then the offline figure again (the two offline runs bracket the job, so
// drift of the machine shows). The ratio is what the pipeline keeps.

#include <filesystem>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "embed/embed_job.h"
#include "model/tokenizer/load_tokenizer.h"

namespace oclip::cli {
namespace {

namespace fs = std::filesystem;

struct BenchEmbedFlags {
  ModelFlags model;
  std::string image;
  std::string work_dir;
  int64_t samples = 512;
  int64_t batch_size = 32;
  int64_t num_prepro_workers = 0;
  int64_t seconds = 10;
  bool enable_text = false;
};

// A folder of `count` hard links (copies across file systems) to `image`.
absl::Status WriteImageFolder(const std::string& image, int64_t count, const std::string& folder) {
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", folder, ": ", error.message()));
  const std::string extension = fs::path(image).extension().string();
  for (int64_t i = 0; i < count; ++i) {
    const std::string path = absl::StrFormat("%s/%06d%s", folder, i, extension);
    fs::create_hard_link(image, path, error);
    if (error) {
      error.clear();
      fs::copy_file(image, path, error);
    }
    if (error) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", error.message()));
    // A caption, so that --enable-text measures the text tower too.
    OCLIP_RETURN_IF_ERROR(
        WriteStringToFile(absl::StrFormat("%s/%06d.txt", folder, i),
                          absl::StrFormat("a photo of item %d, with a short caption", i)));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> OfflineImageThroughput(ClipModel& model, int64_t batch, double seconds) {
  torch::InferenceMode inference;
  const int64_t s = model.config().vision.image_size;
  torch::Tensor images = torch::randn({batch, 3, s, s});
  return MeasureThroughput(seconds, batch, [&] { return model.EncodeImage(images).status(); });
}

absl::Status BenchEmbed(const BenchEmbedFlags& flags) {
  if (flags.image.empty()) return absl::InvalidArgumentError("--image is required");
  if (flags.samples < 1 || flags.batch_size < 1) {
    return absl::InvalidArgumentError("--samples and --batch-size must be >= 1");
  }
  OCLIP_ASSIGN_OR_RETURN(const std::string work, BenchWorkDir(flags.work_dir, "oclip-bench-embed"));
  OCLIP_RETURN_IF_ERROR(WriteImageFolder(flags.image, flags.samples, work + "/images"));

  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, flags.model.LoadModel());
  std::shared_ptr<const Tokenizer> tokenizer;
  if (flags.enable_text) {
    OCLIP_ASSIGN_OR_RETURN(tokenizer, flags.model.LoadTokenizer(model->config()));
  }
  const double seconds = static_cast<double>(flags.seconds);
  OCLIP_ASSIGN_OR_RETURN(double offline_before,
                         OfflineImageThroughput(*model, flags.batch_size, seconds));

  EmbedJobOptions options;
  options.input_dataset = work + "/images";
  options.input_format = DatasetType::kImageFolder;
  options.output_folder = work + "/out";
  fs::remove_all(options.output_folder);
  options.enable_text = flags.enable_text;
  options.batch_size = static_cast<int>(flags.batch_size);
  options.num_prepro_workers = static_cast<int>(flags.num_prepro_workers);
  options.preprocess = flags.model.Preprocessing(model->config());
  options.progress_interval_seconds = 1e9;  // No progress lines in a benchmark.
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<EmbedJob> job,
                         EmbedJob::Create(options, model, tokenizer));
  OCLIP_ASSIGN_OR_RETURN(EmbedJobStats stats, job->Run());
  job.reset();

  OCLIP_ASSIGN_OR_RETURN(double offline_after,
                         OfflineImageThroughput(*model, flags.batch_size, seconds));
  if (flags.work_dir.empty()) fs::remove_all(work);

  const double embed_rate = static_cast<double>(stats.samples) / stats.seconds;
  const double offline = (offline_before + offline_after) / 2;
  nlohmann::json result = {{"benchmark", "embed"},
                           {"model", flags.model.model},
                           {"image", flags.image},
                           {"samples", stats.samples},
                           {"batch", flags.batch_size},
                           {"enable_text", flags.enable_text},
                           {"threads", torch::get_num_threads()},
                           {"offline_images_per_second_before", offline_before},
                           {"offline_images_per_second_after", offline_after},
                           {"embed_samples_per_second", embed_rate},
                           {"embed_vs_offline", embed_rate / offline}};
  std::cout << result.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunBenchEmbed(int argc, char** argv) {
  BenchEmbedFlags values;
  values.model.pretrained = "random";
  FlagSet flags("bench embed",
                "The embedding job's samples per second over a folder of copies of one image,\n"
                "against the model's offline image throughput at the same batch size.");
  values.model.Register(flags);
  flags.AddString("image", &values.image, "the image file the folder is made of");
  flags.AddInt("samples", &values.samples, "images in the folder (512)");
  flags.AddInt("batch-size", &values.batch_size, "batch size of the job and the model (32)");
  flags.AddInt("num-prepro-workers", &values.num_prepro_workers,
               "decoding threads of the job (0 = every core)");
  flags.AddBool("enable-text", &values.enable_text,
                "embed captions too (the offline figure stays images only)");
  flags.AddInt("seconds", &values.seconds, "measuring time of each offline figure (10)");
  flags.AddString("work-dir", &values.work_dir, "where the folder goes (default: a temp dir)");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  absl::Status status = BenchEmbed(values);
  if (!status.ok()) {
    std::cerr << "oclip bench embed: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
