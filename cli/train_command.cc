// `oclip train`: OpenCLIP's training entry point (training/main.py) with its
// flag names and defaults, for one rank of a data-parallel job. The rank
// comes from torchrun's or SLURM's environment (training/distributed.h);
// `oclip launch` sets it for local ranks.

#include <torch/torch.h>

#include <iostream>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/status.h"
#include "training/distributed.h"
#include "training/trainer.h"

namespace oclip::cli {
namespace {

struct TrainFlags {
  ModelFlags model;
  std::string train_data, val_data, dataset_type = "auto";
  std::string csv_img_key = "filepath", csv_caption_key = "title", csv_separator = "\t";
  int64_t train_num_samples = 0, val_num_samples = 0;
  bool dataset_resampled = false;
  int64_t workers = 4;
  std::string imagenet_val, zeroshot_classnames, zeroshot_templates;
  bool lock_image = false, lock_text = false, lock_text_freeze_layer_norm = false;
  int64_t lock_image_unlocked_groups = 0, lock_text_unlocked_layers = 0;
  bool grad_checkpointing = false;
  int64_t batch_size = 64, epochs = 32, epochs_cooldown = 0, warmup = 10000, accum_freq = 1;
  std::string lr, beta1, beta2, eps, wd = "0.2", lr_scheduler = "cosine";
  std::string lr_cooldown_end = "0.0", lr_cooldown_power = "1.0", grad_clip_norm;
  bool skip_scheduler = false;
  std::string precision;
  bool local_loss = false, gather_with_grad = false;
  int64_t save_frequency = 1;
  bool save_most_recent = false, delete_previous_checkpoint = false;
  std::string resume, logs = "./logs/", name, report_to;
  int64_t log_every_n_steps = 100, zeroshot_frequency = 2, val_frequency = 1;
  int64_t max_nonfinite_steps = 10;
};

absl::StatusOr<double> ParseDouble(const std::string& flag, const std::string& value) {
  double out;
  if (!absl::SimpleAtod(value, &out)) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " '", value, "' is not a number"));
  }
  return out;
}

// OpenCLIP's get_default_params: ViTs beta2 0.98, eps 1e-6; ResNets 0.999, 1e-8.
absl::Status SetOptimizerDefaults(const TrainFlags& flags, AdamWOptions* adamw) {
  const bool vit = absl::StrContains(absl::AsciiStrToLower(flags.model.model), "vit");
  adamw->lr = 5e-4;
  adamw->beta1 = 0.9;
  adamw->beta2 = vit ? 0.98 : 0.999;
  adamw->eps = vit ? 1e-6 : 1e-8;
  if (!flags.lr.empty()) {
    OCLIP_ASSIGN_OR_RETURN(adamw->lr, ParseDouble("lr", flags.lr));
  }
  if (!flags.beta1.empty()) {
    OCLIP_ASSIGN_OR_RETURN(adamw->beta1, ParseDouble("beta1", flags.beta1));
  }
  if (!flags.beta2.empty()) {
    OCLIP_ASSIGN_OR_RETURN(adamw->beta2, ParseDouble("beta2", flags.beta2));
  }
  if (!flags.eps.empty()) {
    OCLIP_ASSIGN_OR_RETURN(adamw->eps, ParseDouble("eps", flags.eps));
  }
  return absl::OkStatus();
}

absl::Status Train(TrainFlags flags) {
  if (flags.dataset_resampled && flags.dataset_type == "csv") {
    return absl::InvalidArgumentError("--dataset-resampled applies to webdataset data only");
  }
  if (flags.report_to != "" && flags.report_to != "tensorboard") {
    return absl::InvalidArgumentError(absl::StrCat("--report-to '", flags.report_to,
                                                   "': only tensorboard is supported (no wandb)"));
  }
  OCLIP_ASSIGN_OR_RETURN(DistributedEnv env, DetectDistributedEnv());
  if (flags.model.pretrained.empty()) flags.model.pretrained = "random";
  if (flags.model.model.empty()) flags.model.model = "RN50";  // OpenCLIP's default.

  TrainerOptions options;
  options.train_data = flags.train_data;
  options.val_data = flags.val_data;
  options.dataset_type = flags.dataset_type;
  options.csv_img_key = flags.csv_img_key;
  options.csv_caption_key = flags.csv_caption_key;
  std::string separator = flags.csv_separator == "\\t" ? "\t" : flags.csv_separator;
  if (separator.size() != 1) {
    return absl::InvalidArgumentError("--csv-separator must be one character");
  }
  options.csv_separator = separator[0];
  options.train_num_samples = flags.train_num_samples;
  options.val_num_samples = flags.val_num_samples;
  options.dataset_resampled = flags.dataset_resampled;
  options.workers = static_cast<int>(std::max<int64_t>(1, flags.workers));
  options.imagenet_val = flags.imagenet_val;
  options.zeroshot_classnames = flags.zeroshot_classnames;
  options.zeroshot_templates = flags.zeroshot_templates;
  options.model_name = flags.model.model;
  options.lock_image = flags.lock_image;
  options.lock_image_unlocked_groups = static_cast<int>(flags.lock_image_unlocked_groups);
  options.lock_text = flags.lock_text;
  options.lock_text_unlocked_layers = static_cast<int>(flags.lock_text_unlocked_layers);
  options.lock_text_freeze_layer_norm = flags.lock_text_freeze_layer_norm;
  options.grad_checkpointing = flags.grad_checkpointing;
  options.batch_size = flags.batch_size;
  options.epochs = flags.epochs;
  OCLIP_RETURN_IF_ERROR(SetOptimizerDefaults(flags, &options.adamw));
  OCLIP_ASSIGN_OR_RETURN(options.wd, ParseDouble("wd", flags.wd));
  options.warmup = flags.warmup;
  OCLIP_ASSIGN_OR_RETURN(options.lr_scheduler, ParseLrScheduler(flags.lr_scheduler));
  options.epochs_cooldown = flags.epochs_cooldown;
  OCLIP_ASSIGN_OR_RETURN(options.lr_cooldown_end,
                         ParseDouble("lr-cooldown-end", flags.lr_cooldown_end));
  OCLIP_ASSIGN_OR_RETURN(options.lr_cooldown_power,
                         ParseDouble("lr-cooldown-power", flags.lr_cooldown_power));
  options.skip_scheduler = flags.skip_scheduler;
  if (!flags.grad_clip_norm.empty()) {
    OCLIP_ASSIGN_OR_RETURN(options.grad_clip_norm,
                           ParseDouble("grad-clip-norm", flags.grad_clip_norm));
  }
  options.accum_freq = static_cast<int>(flags.accum_freq);
  options.loss.local_loss = flags.local_loss;
  options.loss.gather_with_grad = flags.gather_with_grad;
  options.max_consecutive_nonfinite = static_cast<int>(flags.max_nonfinite_steps);
  options.save_frequency = static_cast<int>(flags.save_frequency);
  options.save_most_recent = flags.save_most_recent;
  options.resume = flags.resume;
  options.delete_previous_checkpoint = flags.delete_previous_checkpoint;
  options.logs = flags.logs;
  options.name = flags.name;
  options.tensorboard = flags.report_to == "tensorboard";
  options.log_every_n_steps = static_cast<int>(flags.log_every_n_steps);
  options.zeroshot_frequency = static_cast<int>(flags.zeroshot_frequency);
  options.val_frequency = static_cast<int>(flags.val_frequency);
  options.seed = static_cast<uint64_t>(flags.model.seed);

  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, flags.model.LoadModel());
  torch::Device device = torch::kCPU;
  if (torch::cuda::is_available()) {
    device = torch::Device(torch::kCUDA, static_cast<int16_t>(env.local_rank));
    model->to(device);
  }
  // OpenCLIP's default is amp (fp16 on CUDA); on the CPU fp32.
  const std::string precision =
      flags.precision.empty() ? (device.is_cuda() ? "amp" : "fp32") : flags.precision;
  OCLIP_ASSIGN_OR_RETURN(options.precision, ParseTrainPrecision(precision, device));
  options.preprocess = flags.model.Preprocessing(model->config());
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                         flags.model.LoadTokenizer(model->config()));

  std::unique_ptr<GlooCommunicator> communicator;
  if (env.distributed) {
    OCLIP_ASSIGN_OR_RETURN(communicator, ConnectGloo(env));
  }
  OCLIP_ASSIGN_OR_RETURN(auto trainer,
                         Trainer::Create(options, model, std::move(tokenizer), communicator.get()));
  OCLIP_ASSIGN_OR_RETURN(TrainSummary summary, trainer->Run());
  if (env.rank == 0) {
    std::cout << "{\"steps\": " << summary.steps << ", \"skipped_steps\": " << summary.skipped_steps
              << ", \"last_loss\": " << summary.last_loss << ", \"run_dir\": \"" << summary.run_dir
              << "\", \"checkpoint\": \"" << summary.last_checkpoint << "\"}\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunTrain(int argc, char** argv) {
  TrainFlags v;
  FlagSet flags("train",
                "Trains a CLIP model as OpenCLIP's training does (same flag names and\n"
                "defaults). One process per rank: run it under `oclip launch`, torchrun-style\n"
                "environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)\n"
                "or SLURM (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID). Writes LOGS/NAME/ with\n"
                "out.log, params.txt, checkpoints/epoch_N.safetensors (+ .state.safetensors),\n"
                "checkpoints/results.jsonl and tensorboard/.");
  v.model.Register(flags);
  flags.AddString("train-data", &v.train_data,
                  "training data: a CSV/TSV file or webdataset shards");
  flags.AddString("val-data", &v.val_data, "validation data (retrieval metrics, val loss)");
  flags.AddString("dataset-type", &v.dataset_type, "auto (default), csv, webdataset or synthetic");
  flags.AddString("csv-img-key", &v.csv_img_key, "CSV image path column (default filepath)");
  flags.AddString("csv-caption-key", &v.csv_caption_key, "CSV caption column (default title)");
  flags.AddString("csv-separator", &v.csv_separator, "CSV separator (default tab)");
  flags.AddInt("train-num-samples", &v.train_num_samples,
               "samples per epoch (webdataset; synthetic set size)");
  flags.AddInt("val-num-samples", &v.val_num_samples, "validation samples (default all)");
  flags.AddBool("dataset-resampled", &v.dataset_resampled,
                "webdataset: each rank draws shards at random with replacement (seeded per "
                "epoch); an epoch is --train-num-samples samples");
  flags.AddInt("workers", &v.workers, "image decoding threads per rank (default 4)");
  flags.AddString("imagenet-val", &v.imagenet_val,
                  "ImageFolder-style directory for zero-shot top-1/top-5");
  flags.AddString("zeroshot-classnames", &v.zeroshot_classnames,
                  "class names for --imagenet-val, one per line in folder order");
  flags.AddString("zeroshot-templates", &v.zeroshot_templates,
                  "prompt templates file, one per line with {} (OpenCLIP uses OpenAI's 80 "
                  "ImageNet templates; default: \"a photo of a {}.\")");
  flags.AddBool("lock-image", &v.lock_image, "freeze the image tower (LiT)");
  flags.AddInt("lock-image-unlocked-groups", &v.lock_image_unlocked_groups,
               "leave the last N image tower groups trainable");
  flags.AddBool("lock-text", &v.lock_text, "freeze the text tower");
  flags.AddInt("lock-text-unlocked-layers", &v.lock_text_unlocked_layers,
               "leave the last N text layers trainable");
  flags.AddBool("lock-text-freeze-layer-norm", &v.lock_text_freeze_layer_norm,
                "also freeze the text tower's LayerNorms");
  flags.AddBool("grad-checkpointing", &v.grad_checkpointing,
                "recompute transformer block activations in the backward pass (less memory; "
                "a ResNet image tower is not checkpointed, as in OpenCLIP)");
  flags.AddInt("batch-size", &v.batch_size, "batch per rank (default 64)");
  flags.AddInt("epochs", &v.epochs, "epochs (default 32)");
  flags.AddString("lr", &v.lr, "learning rate (default 5e-4)");
  flags.AddString("beta1", &v.beta1, "AdamW beta1 (default 0.9)");
  flags.AddString("beta2", &v.beta2, "AdamW beta2 (default 0.98 for ViTs, 0.999 otherwise)");
  flags.AddString("eps", &v.eps, "AdamW epsilon (default 1e-6 for ViTs, 1e-8 otherwise)");
  flags.AddString("wd", &v.wd, "weight decay (default 0.2)");
  flags.AddInt("warmup", &v.warmup, "warmup steps (default 10000)");
  flags.AddString("lr-scheduler", &v.lr_scheduler, "cosine (default), const or const-cooldown");
  flags.AddInt("epochs-cooldown", &v.epochs_cooldown, "cooldown epochs for const-cooldown");
  flags.AddString("lr-cooldown-end", &v.lr_cooldown_end, "final LR of the cooldown (default 0)");
  flags.AddString("lr-cooldown-power", &v.lr_cooldown_power, "cooldown power (default 1)");
  flags.AddBool("skip-scheduler", &v.skip_scheduler, "keep the LR constant at --lr");
  flags.AddString("grad-clip-norm", &v.grad_clip_norm, "clip the global gradient norm");
  flags.AddInt("accum-freq", &v.accum_freq, "gradient accumulation micro-batches (default 1)");
  flags.AddString("precision", &v.precision,
                  "fp32, amp_bf16, pure_bf16 (CPU); amp, fp16, pure_fp16 need CUDA "
                  "(default: amp on CUDA, fp32 on CPU)");
  flags.AddBool("local-loss", &v.local_loss, "local x global logits (with --gather-with-grad)");
  flags.AddBool("gather-with-grad", &v.gather_with_grad, "all-gather features with gradient");
  flags.AddInt("save-frequency", &v.save_frequency, "checkpoint every N epochs (default 1)");
  flags.AddBool("save-most-recent", &v.save_most_recent, "also write epoch_latest");
  flags.AddString("resume", &v.resume, "checkpoint to resume from, or latest");
  flags.AddBool("delete-previous-checkpoint", &v.delete_previous_checkpoint,
                "remove epoch_{N-1} after saving epoch_N");
  flags.AddString("logs", &v.logs, "root of run directories (default ./logs/; none: no files)");
  flags.AddString("name", &v.name, "run name (default: date-model-lr-batch-workers-precision)");
  flags.AddString("report-to", &v.report_to, "tensorboard (or empty)");
  flags.AddInt("log-every-n-steps", &v.log_every_n_steps, "progress interval (default 100)");
  flags.AddInt("zeroshot-frequency", &v.zeroshot_frequency, "epochs between zero-shot evals (2)");
  flags.AddInt("val-frequency", &v.val_frequency, "epochs between val evals (default 1)");
  flags.AddInt("max-nonfinite-steps", &v.max_nonfinite_steps,
               "consecutive non-finite losses tolerated before stopping (default 10)");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  if (absl::Status status = Train(v); !status.ok()) {
    std::cerr << "oclip train: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
