#include "training/trainer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/logging.h"
#include "core/status.h"
#include "core/tensorboard_writer.h"
#include "model/zero_shot.h"
#include "training/checkpoint.h"
#include "training/distributed.h"

namespace oclip {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status MakeDirectories(const std::string& path) {
  std::string prefix;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    prefix += std::string(part) + "/";
    if (part.empty() || part == ".") continue;
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoToStatus(errno, absl::StrCat("creating ", prefix));
    }
  }
  return absl::OkStatus();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  return absl::StrFormat("%.10g", value);
}

std::string MetricsJson(const Metrics& metrics) {
  std::string json = "{";
  for (const auto& [key, value] : metrics) {
    absl::StrAppend(&json, json.size() > 1 ? ", " : "", JsonQuote(key), ": ", JsonNumber(value));
  }
  return json + "}";
}

// The resblock index in "prefix.transformer.resblocks.N.rest", or -1.
int BlockIndex(absl::string_view name, absl::string_view blocks_prefix) {
  if (!absl::ConsumePrefix(&name, blocks_prefix)) return -1;
  const size_t dot = name.find('.');
  int index;
  if (!absl::SimpleAtoi(name.substr(0, dot), &index)) return -1;
  return index;
}

}  // namespace

Trainer::Trainer(const TrainerOptions& options, std::shared_ptr<ClipModel> model,
                 std::unique_ptr<Tokenizer> tokenizer, Communicator* communicator)
    : options_(options),
      model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      communicator_(communicator != nullptr ? communicator : &local_) {}

Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& options,
                                                         std::shared_ptr<ClipModel> model,
                                                         std::unique_ptr<Tokenizer> tokenizer,
                                                         Communicator* communicator) {
  if (model == nullptr || tokenizer == nullptr) {
    return absl::InvalidArgumentError("a model and its tokenizer are required");
  }
  if (options.batch_size < 1) return absl::InvalidArgumentError("--batch-size must be >= 1");
  if (options.epochs < 1) return absl::InvalidArgumentError("--epochs must be >= 1");
  if (options.accum_freq < 1) return absl::InvalidArgumentError("--accum-freq must be >= 1");
  if (options.warmup < 0) return absl::InvalidArgumentError("--warmup must be >= 0");
  if (options.log_every_n_steps < 1) {
    return absl::InvalidArgumentError("--log-every-n-steps must be >= 1");
  }
  if (options.train_data.empty() && options.dataset_type != "synthetic" &&
      options.val_data.empty() && options.imagenet_val.empty()) {
    return absl::InvalidArgumentError(
        "nothing to do: give --train-data (or --dataset-type synthetic), --val-data or "
        "--imagenet-val");
  }
  if (!options.imagenet_val.empty() && options.zeroshot_classnames.empty()) {
    return absl::InvalidArgumentError("--imagenet-val needs --zeroshot-classnames (a file)");
  }
  if (options.lr_scheduler == LrScheduler::kConstCooldown && options.epochs_cooldown <= 0) {
    return absl::InvalidArgumentError("--lr-scheduler const-cooldown needs --epochs-cooldown");
  }
  std::unique_ptr<Trainer> trainer(
      new Trainer(options, std::move(model), std::move(tokenizer), communicator));
  OCLIP_RETURN_IF_ERROR(trainer->Setup());
  return trainer;
}

void Trainer::Info(const std::string& message) {
  if (!master_) return;
  LogInfo(message);
  if (out_log_.is_open()) out_log_ << message << "\n" << std::flush;
}

absl::Status Trainer::Scalar(const std::string& tag, double value, int64_t step) {
  if (!master_ || tensorboard_ == nullptr) return absl::OkStatus();
  return tensorboard_->AddScalar(tag, value, step);
}

absl::Status Trainer::ApplyLocks() {
  const bool resnet = model_->config().vision.is_resnet();
  if (options_.lock_image) {
    if (resnet && options_.lock_image_unlocked_groups != 0) {
      return absl::InvalidArgumentError(
          "--lock-image-unlocked-groups is not supported for ResNet image towers (as OpenCLIP)");
    }
    // VisionTransformer.lock's groups: [conv1, class/pos embedding, ln_pre],
    // blocks 0..L-2, [block L-1, ln_post], proj.
    int layers = 0;
    for (const auto& item : model_->named_parameters()) {
      layers = std::max(layers, BlockIndex(item.key(), "visual.transformer.resblocks.") + 1);
    }
    const int num_groups = layers + 2;
    for (auto& item : model_->named_parameters()) {
      const std::string& name = item.key();
      if (!absl::StartsWith(name, "visual.")) continue;
      int group = 0;
      const int block = BlockIndex(name, "visual.transformer.resblocks.");
      if (block >= 0) {
        group = block + 1;
      } else if (absl::StartsWith(name, "visual.ln_post.")) {
        group = layers;
      } else if (name == "visual.proj") {
        group = layers + 1;
      }
      const bool unlocked = !resnet && group >= num_groups - options_.lock_image_unlocked_groups;
      item.value().set_requires_grad(unlocked);
    }
  }
  if (options_.lock_text) {
    const bool hf = model_->config().text.is_hf();
    int layers = 0;
    const std::string blocks = hf ? "text.transformer.encoder.layer." : "transformer.resblocks.";
    for (const auto& item : model_->named_parameters()) {
      layers = std::max(layers, BlockIndex(item.key(), blocks) + 1);
    }
    for (auto& item : model_->named_parameters()) {
      const std::string& name = item.key();
      const bool text =
          hf ? absl::StartsWith(name, "text.transformer.")
             : (absl::StartsWith(name, "transformer.") ||
                absl::StartsWith(name, "token_embedding.") || name == "positional_embedding" ||
                absl::StartsWith(name, "ln_final.") || name == "text_projection");
      if (!text) continue;
      const int block = BlockIndex(name, blocks);
      bool unlocked = block >= 0 && block >= layers - options_.lock_text_unlocked_layers;
      if (!hf && block < 0 && options_.lock_text_unlocked_layers > 0 &&
          (absl::StartsWith(name, "ln_final.") || name == "text_projection")) {
        unlocked = true;  // The last group follows the last unlocked block.
      }
      const bool layer_norm = absl::StrContains(name, "LayerNorm") ||
                              absl::StrContains(name, ".ln_") ||
                              absl::StartsWith(name, "ln_final.");
      if (layer_norm && !options_.lock_text_freeze_layer_norm) unlocked = true;
      item.value().set_requires_grad(unlocked);
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::Setup() {
  master_ = communicator_->rank() == 0;
  device_ = model_->device();
  try {
    if (WeightDtype(options_.precision) != torch::kFloat) {
      model_->to(WeightDtype(options_.precision));
    }
    model_->train();
    model_->SetGradCheckpointing(options_.grad_checkpointing);
    OCLIP_RETURN_IF_ERROR(ApplyLocks());
    BroadcastModule(*model_, *communicator_);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("preparing the model: ", e.what()));
  }
  optimizer_ = std::make_unique<AdamW>(OpenClipParamGroups(*model_, options_.wd), options_.adamw);
  GradScalerOptions scaler;
  scaler.enabled = options_.precision == TrainPrecision::kAmp;  // OpenCLIP: amp only.
  scaler_ = GradScaler(scaler);
  parameters_ = AllParameters(optimizer_->groups());

  // Run name, identical on every rank (rank 0's clock).
  if (options_.name.empty()) {
    std::vector<torch::Tensor> now = {torch::tensor({static_cast<int64_t>(std::time(nullptr))})};
    communicator_->Broadcast(now, 0);
    const std::time_t t = static_cast<std::time_t>(now[0].item<int64_t>());
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y_%m_%d-%H_%M_%S", std::localtime(&t));
    std::string model_name = options_.model_name;
    std::replace(model_name.begin(), model_name.end(), '/', '-');
    options_.name = absl::StrCat(stamp, "-model_", model_name, "-lr_", options_.adamw.lr, "-b_",
                                 options_.batch_size, "-j_", options_.workers, "-p_",
                                 TrainPrecisionName(options_.precision));
  }
  const bool resume_latest = options_.resume == "latest";
  if (options_.logs != "none") {
    run_dir_ =
        absl::StrCat(options_.logs, absl::EndsWith(options_.logs, "/") ? "" : "/", options_.name);
    checkpoint_dir_ = run_dir_ + "/checkpoints";
    if (master_) {
      if (PathExists(run_dir_ + "/out.log") && !resume_latest) {
        return absl::FailedPreconditionError(
            absl::StrCat("experiment ", run_dir_,
                         " already exists; use --name to pick another or "
                         "--resume latest to continue it"));
      }
      OCLIP_RETURN_IF_ERROR(MakeDirectories(checkpoint_dir_));
      out_log_.open(run_dir_ + "/out.log", std::ios::app);
      if (!out_log_) return absl::PermissionDeniedError("cannot write " + run_dir_ + "/out.log");
      if (options_.tensorboard) {
        OCLIP_ASSIGN_OR_RETURN(tensorboard_, TensorBoardWriter::Open(run_dir_ + "/tensorboard"));
      }
    }
    communicator_->Barrier();
  } else if (resume_latest) {
    return absl::InvalidArgumentError("--resume latest needs a run directory (--logs)");
  }
  summary_.run_dir = run_dir_;

  // Data.
  DataPipelineOptions data;
  data.dataset_type = options_.dataset_type;
  data.csv_img_key = options_.csv_img_key;
  data.csv_caption_key = options_.csv_caption_key;
  data.csv_separator = options_.csv_separator;
  data.batch_size = options_.batch_size;
  data.workers = options_.workers;
  data.rank = communicator_->rank();
  data.world_size = communicator_->world_size();
  data.seed = options_.seed;
  data.preprocess = options_.preprocess;
  data.crop = options_.crop;
  if (!options_.train_data.empty() || options_.dataset_type == "synthetic") {
    data.data = options_.train_data;
    data.num_samples = options_.train_num_samples;
    data.train = true;
    data.resampled = options_.dataset_resampled;
    OCLIP_ASSIGN_OR_RETURN(train_, DataPipeline::Create(data, tokenizer_.get()));
    steps_per_epoch_ = train_->num_batches() / options_.accum_freq;
    if (steps_per_epoch_ == 0) {
      return absl::InvalidArgumentError(absl::StrCat("an epoch has ", train_->num_batches(),
                                                     " batches: fewer than --accum-freq ",
                                                     options_.accum_freq));
    }
  }
  if (!options_.val_data.empty() && master_) {
    data.data = options_.val_data;
    data.dataset_type = options_.dataset_type == "synthetic" ? "auto" : options_.dataset_type;
    data.num_samples = options_.val_num_samples;
    data.train = false;
    data.resampled = false;
    data.rank = 0;
    data.world_size = 1;
    OCLIP_ASSIGN_OR_RETURN(val_, DataPipeline::Create(data, tokenizer_.get()));
  }
  schedule_.scheduler = options_.lr_scheduler;
  schedule_.base_lr = options_.adamw.lr;
  schedule_.warmup_steps = options_.warmup;
  schedule_.total_steps = steps_per_epoch_ * options_.epochs;
  schedule_.cooldown_steps = steps_per_epoch_ * options_.epochs_cooldown;
  schedule_.cooldown_end_lr = options_.lr_cooldown_end;
  schedule_.cooldown_power = options_.lr_cooldown_power;

  // Resume.
  if (!options_.resume.empty()) {
    std::string path = options_.resume;
    if (resume_latest) {
      absl::StatusOr<std::string> latest = FindLatestCheckpoint(checkpoint_dir_);
      if (!latest.ok() && !absl::IsNotFound(latest.status())) return latest.status();
      path = latest.ok() ? *latest : "";
      if (path.empty()) Info("--resume latest: no checkpoint yet, starting from scratch");
    }
    if (!path.empty()) {
      OCLIP_ASSIGN_OR_RETURN(TrainingState state,
                             LoadTrainingCheckpoint(path, *model_, optimizer_.get()));
      start_epoch_ = state.epoch;
      step_ = state.step;
      if (scaler_.enabled() && state.scaler_scale > 0) {
        scaler_.set_state({state.scaler_scale, state.scaler_growth_tracker});
      }
      Info(absl::StrCat("=> resuming checkpoint '", path, "' (epoch ", state.epoch, ", step ",
                        state.step, ")"));
    }
  }

  if (master_ && !run_dir_.empty()) {
    std::ofstream params(run_dir_ + "/params.txt");
    const std::map<std::string, std::string> values = {
        {"accum_freq", absl::StrCat(options_.accum_freq)},
        {"batch_size", absl::StrCat(options_.batch_size)},
        {"beta1", absl::StrCat(options_.adamw.beta1)},
        {"beta2", absl::StrCat(options_.adamw.beta2)},
        {"dataset_resampled", options_.dataset_resampled ? "True" : "False"},
        {"dataset_type", options_.dataset_type},
        {"epochs", absl::StrCat(options_.epochs)},
        {"eps", absl::StrCat(options_.adamw.eps)},
        {"gather_with_grad", options_.loss.gather_with_grad ? "True" : "False"},
        {"grad_checkpointing", options_.grad_checkpointing ? "True" : "False"},
        {"grad_clip_norm", absl::StrCat(options_.grad_clip_norm)},
        {"imagenet_val", options_.imagenet_val},
        {"local_loss", options_.loss.local_loss ? "True" : "False"},
        {"lr", absl::StrCat(options_.adamw.lr)},
        {"model", options_.model_name},
        {"name", options_.name},
        {"precision", TrainPrecisionName(options_.precision)},
        {"resume", options_.resume},
        {"seed", absl::StrCat(options_.seed)},
        {"train_data", options_.train_data},
        {"train_num_samples", absl::StrCat(options_.train_num_samples)},
        {"val_data", options_.val_data},
        {"warmup", absl::StrCat(options_.warmup)},
        {"wd", absl::StrCat(options_.wd)},
        {"world_size", absl::StrCat(communicator_->world_size())},
    };
    for (const auto& [key, value] : values) params << key << ": " << value << "\n";
  }
  return absl::OkStatus();
}

torch::Tensor Trainer::Loss(const torch::Tensor& image_features,
                            const torch::Tensor& text_features) {
  return ClipLoss(image_features, text_features, model_->logit_scale().exp(), options_.loss,
                  communicator_);
}

absl::Status Trainer::OptimizerStep(const std::vector<Batch>& micro_batches, int64_t step) {
  namespace F = torch::nn::functional;
  const auto normalize = F::NormalizeFuncOptions().dim(-1);
  const torch::ScalarType input_dtype = WeightDtype(options_.precision);
  const torch::ScalarType autocast = AutocastDtype(options_.precision);
  if (!options_.skip_scheduler) optimizer_->set_lr(LearningRate(schedule_, step));

  // Whether any rank saw a non-finite loss (all ranks must skip together).
  auto any_nonfinite = [&](const torch::Tensor& loss) {
    std::vector<torch::Tensor> flag = {
        torch::tensor({std::isfinite(loss.item<double>()) ? 0.0f : 1.0f})};
    communicator_->AllReduceSum(flag);
    return flag[0].item<float>() > 0;
  };

  std::vector<torch::Tensor> images, tokens;
  for (const Batch& b : micro_batches) {
    images.push_back(b.images.to(device_, input_dtype));
    tokens.push_back(b.tokens.to(device_));
  }
  optimizer_->ZeroGrad();
  torch::Tensor loss;
  bool skip = false;
  if (micro_batches.size() == 1) {
    {
      AutocastGuard guard(autocast, device_);
      loss = Loss(F::normalize(model_->ImageForward(images[0]), normalize),
                  F::normalize(model_->TextForward(tokens[0]), normalize));
    }
    skip = any_nonfinite(loss);
    if (!skip) scaler_.Scale(loss).backward();
  } else {
    // OpenCLIP's accumulation: features of every micro-batch without grad,
    // then each micro-batch again with grad against the cached others.
    std::vector<torch::Tensor> cached_image, cached_text;
    {
      torch::NoGradGuard no_grad;
      AutocastGuard guard(autocast, device_);
      for (size_t j = 0; j < micro_batches.size(); ++j) {
        cached_image.push_back(F::normalize(model_->ImageForward(images[j]), normalize));
        cached_text.push_back(F::normalize(model_->TextForward(tokens[j]), normalize));
      }
    }
    for (size_t j = 0; j < micro_batches.size() && !skip; ++j) {
      {
        AutocastGuard guard(autocast, device_);
        std::vector<torch::Tensor> all_image = cached_image, all_text = cached_text;
        all_image[j] = F::normalize(model_->ImageForward(images[j]), normalize);
        all_text[j] = F::normalize(model_->TextForward(tokens[j]), normalize);
        loss = Loss(torch::cat(all_image), torch::cat(all_text));
      }
      skip = any_nonfinite(loss);
      if (!skip) scaler_.Scale(loss).backward();
    }
  }
  if (skip) {
    optimizer_->ZeroGrad();
    summary_.last_loss = loss.item<double>();
    ++summary_.skipped_steps;
    ++consecutive_nonfinite_;
    Info(absl::StrCat("step ", step, ": non-finite loss, step skipped (", consecutive_nonfinite_,
                      " in a row)"));
    if (consecutive_nonfinite_ > options_.max_consecutive_nonfinite) {
      return absl::FailedPreconditionError(absl::StrCat(
          consecutive_nonfinite_, " consecutive non-finite losses (limit ",
          options_.max_consecutive_nonfinite,
          "): stopping; the last checkpoint written is intact. Lower --lr, raise --warmup or "
          "use fp32"));
    }
    return absl::OkStatus();
  }
  consecutive_nonfinite_ = 0;
  AverageGradients(parameters_, *communicator_);
  if (options_.grad_clip_norm > 0) {
    scaler_.Unscale(parameters_);
    ClipGradNorm(parameters_, options_.grad_clip_norm);
  }
  scaler_.Step(parameters_, [this] { optimizer_->Step(); });
  scaler_.Update();
  torch::Tensor logit_scale = model_->logit_scale();
  ClampLogitScale(logit_scale);
  summary_.last_loss = loss.item<double>();
  loss_sum_ += summary_.last_loss;
  ++loss_count_;
  return absl::OkStatus();
}

absl::Status Trainer::TrainEpoch(int64_t epoch) {
  OCLIP_RETURN_IF_ERROR(train_->StartEpoch(static_cast<int>(epoch)));
  const int64_t global_batch =
      options_.batch_size * options_.accum_freq * communicator_->world_size();
  const int64_t samples_per_epoch = steps_per_epoch_ * global_batch;
  Clock::time_point last_log = Clock::now();
  double data_seconds = 0;
  int64_t steps_since_log = 0;
  for (int64_t i = 0; i < steps_per_epoch_; ++i) {
    const Clock::time_point data_start = Clock::now();
    std::vector<Batch> micro_batches(options_.accum_freq);
    for (Batch& b : micro_batches) {
      OCLIP_ASSIGN_OR_RETURN(bool more, train_->Next(&b));
      if (!more) {
        return absl::DataLossError(
            absl::StrCat("epoch ", epoch, " ended after ", i, " of ", steps_per_epoch_, " steps"));
      }
    }
    data_seconds += std::chrono::duration<double>(Clock::now() - data_start).count();
    const int64_t step = steps_per_epoch_ * epoch + i;
    try {
      OCLIP_RETURN_IF_ERROR(OptimizerStep(micro_batches, step));
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("training step ", step, " failed: ", e.what()));
    }
    ++step_;
    ++summary_.steps;
    ++steps_since_log;
    const bool last = i + 1 == steps_per_epoch_;
    if ((i + 1) % options_.log_every_n_steps == 0 || last) {
      const double seconds = std::chrono::duration<double>(Clock::now() - last_log).count();
      const double samples_per_second = steps_since_log * global_batch / std::max(seconds, 1e-9);
      const double per_gpu = samples_per_second / communicator_->world_size();
      const double scale = model_->logit_scale().exp().item<double>();
      const double average = loss_count_ > 0 ? loss_sum_ / loss_count_ : NAN;
      const int64_t done = (i + 1) * global_batch;
      Info(absl::StrFormat(
          "Train Epoch: %d [%d/%d (%.0f%%)] Step: %d Data (t): %.3f Batch (t): %.3f, %#g/s, "
          "%#g/s/gpu LR: %f Logit Scale: %.3f Loss: %.9g (%.5g)",
          epoch, done, samples_per_epoch, 100.0 * (i + 1) / steps_per_epoch_, step,
          data_seconds / steps_since_log, seconds / steps_since_log, samples_per_second, per_gpu,
          optimizer_->lr(), scale, summary_.last_loss, average));
      OCLIP_RETURN_IF_ERROR(Scalar("train/loss", summary_.last_loss, step));
      OCLIP_RETURN_IF_ERROR(Scalar("train/lr", optimizer_->lr(), step));
      OCLIP_RETURN_IF_ERROR(Scalar("train/scale", scale, step));
      OCLIP_RETURN_IF_ERROR(Scalar("train/samples_per_second", samples_per_second, step));
      OCLIP_RETURN_IF_ERROR(Scalar("train/samples_per_second_per_gpu", per_gpu, step));
      OCLIP_RETURN_IF_ERROR(Scalar("train/data_time", data_seconds / steps_since_log, step));
      OCLIP_RETURN_IF_ERROR(Scalar("train/batch_time", seconds / steps_since_log, step));
      if (tensorboard_ != nullptr) OCLIP_RETURN_IF_ERROR(tensorboard_->Flush());
      last_log = Clock::now();
      data_seconds = 0;
      steps_since_log = 0;
      loss_sum_ = 0;
      loss_count_ = 0;
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::Evaluate(int64_t completed_epoch) {
  if (!master_) return absl::OkStatus();
  const bool last = completed_epoch == options_.epochs;
  const torch::ScalarType autocast = AutocastDtype(options_.precision);
  Metrics metrics;
  if (!options_.imagenet_val.empty() &&
      (last ||
       (options_.zeroshot_frequency > 0 && completed_epoch % options_.zeroshot_frequency == 0))) {
    ZeroShotOptions zero_shot;
    zero_shot.root = options_.imagenet_val;
    zero_shot.classnames_file = options_.zeroshot_classnames;
    // OpenCLIP evaluates with OpenAI's 80 ImageNet templates; they are data,
    // not shipped here: pass them as a file (--zeroshot-templates), or get
    // oclip's own default prompt.
    if (options_.zeroshot_templates.empty()) {
      zero_shot.templates = {kDefaultTemplate};
    } else {
      OCLIP_ASSIGN_OR_RETURN(zero_shot.templates, ReadTemplateFile(options_.zeroshot_templates));
    }
    zero_shot.batch_size = options_.batch_size;
    zero_shot.workers = options_.workers;
    zero_shot.preprocess = options_.preprocess;
    zero_shot.autocast = autocast;
    Info("Starting zero-shot imagenet.");
    OCLIP_ASSIGN_OR_RETURN(Metrics result, EvaluateZeroShot(*model_, *tokenizer_, zero_shot));
    metrics.insert(result.begin(), result.end());
  }
  if (val_ != nullptr &&
      (last || (options_.val_frequency > 0 && completed_epoch % options_.val_frequency == 0))) {
    OCLIP_ASSIGN_OR_RETURN(Metrics result, EvaluateRetrieval(*model_, *val_, autocast));
    metrics.insert(result.begin(), result.end());
  }
  if (metrics.empty()) return absl::OkStatus();
  metrics["epoch"] = static_cast<double>(completed_epoch);
  std::string line = absl::StrCat("Eval Epoch: ", completed_epoch);
  for (const auto& [key, value] : metrics) {
    absl::StrAppend(&line, " ", key, ": ", absl::StrFormat("%.4f", value));
    OCLIP_RETURN_IF_ERROR(Scalar("val/" + key, value, completed_epoch));
  }
  Info(line);
  if (!checkpoint_dir_.empty()) {
    std::ofstream results(checkpoint_dir_ + "/results.jsonl", std::ios::app);
    results << MetricsJson(metrics) << "\n";
    if (!results)
      return absl::InternalError("cannot append to " + checkpoint_dir_ + "/results.jsonl");
  }
  summary_.last_metrics = metrics;
  return absl::OkStatus();
}

absl::Status Trainer::SaveCheckpoints(int64_t completed_epoch) {
  if (!master_ || checkpoint_dir_.empty()) return absl::OkStatus();
  TrainingState state{completed_epoch, step_, options_.name, options_.model_name};
  if (scaler_.enabled()) {
    state.scaler_scale = scaler_.scale();
    state.scaler_growth_tracker = scaler_.growth_tracker();
  }
  if (completed_epoch == options_.epochs ||
      (options_.save_frequency > 0 && completed_epoch % options_.save_frequency == 0)) {
    const std::string basename = absl::StrCat("epoch_", completed_epoch);
    OCLIP_RETURN_IF_ERROR(
        SaveTrainingCheckpoint(checkpoint_dir_, basename, *model_, *optimizer_, state));
    summary_.last_checkpoint = ModelCheckpointPath(checkpoint_dir_, basename);
    Info(absl::StrCat("saved ", summary_.last_checkpoint));
  }
  if (options_.delete_previous_checkpoint) {
    const std::string previous = absl::StrCat("epoch_", completed_epoch - 1);
    ::unlink(ModelCheckpointPath(checkpoint_dir_, previous).c_str());
    ::unlink(StateCheckpointPath(checkpoint_dir_, previous).c_str());
  }
  if (options_.save_most_recent) {
    OCLIP_RETURN_IF_ERROR(
        SaveTrainingCheckpoint(checkpoint_dir_, "epoch_latest", *model_, *optimizer_, state));
    if (summary_.last_checkpoint.empty()) {
      summary_.last_checkpoint = ModelCheckpointPath(checkpoint_dir_, "epoch_latest");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainSummary> Trainer::Run() {
  try {
    if (train_ == nullptr) {
      // Evaluation only, as OpenCLIP without --train-data.
      OCLIP_RETURN_IF_ERROR(Evaluate(start_epoch_));
      return summary_;
    }
    Info(absl::StrCat("training ", options_.model_name, " for ", options_.epochs, " epochs of ",
                      steps_per_epoch_, " steps on ", communicator_->world_size(), " rank(s); ",
                      train_->num_samples(), " samples per epoch"));
    if (options_.grad_checkpointing && model_->config().vision.is_resnet()) {
      Info("--grad-checkpointing: the text tower is checkpointed; the ResNet image tower is not "
           "(OpenCLIP's ModifiedResNet does not support it either)");
    }
    for (int64_t epoch = start_epoch_; epoch < options_.epochs; ++epoch) {
      Info(absl::StrCat("Start epoch ", epoch));
      OCLIP_RETURN_IF_ERROR(TrainEpoch(epoch));
      const int64_t completed = epoch + 1;
      OCLIP_RETURN_IF_ERROR(Evaluate(completed));
      OCLIP_RETURN_IF_ERROR(SaveCheckpoints(completed));
      communicator_->Barrier();
    }
    if (train_->failed_images() > 0) {
      Info(absl::StrCat(train_->failed_images(), " training images could not be decoded"));
    }
    if (tensorboard_ != nullptr) OCLIP_RETURN_IF_ERROR(tensorboard_->Flush());
    return summary_;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what()));
  }
}

}  // namespace oclip
