#include "server/served_model.h"

#include <ATen/Parallel.h>
#include <pthread.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "model/inference_precision.h"
#include "model/model_loader.h"
#include "model/tokenizer/load_tokenizer.h"
#include "model/zero_shot.h"

namespace oclip {
namespace {

const char* LaneName(int lane) { return lane == static_cast<int>(Lane::kImages) ? "image" : "text"; }

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

BatchSchedulerOptions SchedulerOptions(const ModelServingConfig& config) {
  BatchSchedulerOptions options;
  options.max_batch_size = config.max_batch_size;
  options.max_queue_delay = config.max_queue_delay;
  options.queue_capacity = config.queue_capacity;
  options.num_lanes = 2;
  return options;
}

}  // namespace

absl::StatusOr<torch::Device> ParseServingDevice(const std::string& device) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  int index = 0;
  if (device != "cuda" && !(absl::StartsWith(device, "cuda:") &&
                            absl::SimpleAtoi(device.substr(5), &index) && index >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", device, "': expected cpu, cuda or cuda:N"));
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", device, "': CUDA is not available in this build or machine"));
  }
  if (index >= static_cast<int>(torch::cuda::device_count())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", device, "': this machine has ", torch::cuda::device_count(), " CUDA devices"));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

ServedModel::ServedModel(const ModelServingConfig& config, int classifier_cache_size,
                         ServingMetrics* metrics)
    : config_(config),
      metrics_(metrics),
      classifier_cache_(classifier_cache_size),
      scheduler_(SchedulerOptions(config),
                 [](const WorkItem& item) { return item.ticket->IsLive(); }),
      queue_depth_(metrics->queue_depth->WithLabels({config.name})) {}

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Load(const ModelServingConfig& config,
                                                               int classifier_cache_size,
                                                               ServingMetrics* metrics) {
  std::unique_ptr<ServedModel> served(new ServedModel(config, classifier_cache_size, metrics));
  const torch::ScalarType dtype = CudaWeightType(config.precision);
  for (const std::string& device_name : config.devices) {
    OCLIP_ASSIGN_OR_RETURN(torch::Device device, ParseServingDevice(device_name));
    if (absl::Status supported = CheckPrecisionOnDevice(config.precision, device);
        !supported.ok()) {
      return absl::Status(supported.code(),
                          absl::StrCat("model ", config.name, ": ", supported.message()));
    }
    LoadModelOptions options;
    options.model = config.model;
    options.pretrained = config.pretrained;
    options.seed = config.seed;
    OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> replica, LoadModel(options));
    if (device.is_cpu()) {
      const InferencePrecision precision = config.precision;
      absl::StatusOr<PreparedKernels> prepared = PrepareForInference(*replica, precision);
      if (!prepared.ok()) {
        return absl::Status(prepared.status().code(),
                            absl::StrCat("model ", config.name, ": ", prepared.status().message()));
      }
      LogInfo(absl::StrCat("model ", config.name, " on cpu: ", InferencePrecisionName(precision),
                           " kernels ", prepared->linear_kernel, " (", prepared->linears,
                           " linears), ", prepared->conv_kernel, " (", prepared->convolutions,
                           " convolutions), attention ", prepared->attention_kernel));
    } else {
      try {
        replica->to(device, dtype);
      } catch (const std::exception& e) {
        return absl::ResourceExhaustedError(absl::StrCat("model ", config.name, ": moving it to ",
                                                         device_name, " failed: ", e.what()));
      }
    }
    served->replicas_.push_back(std::move(replica));
  }
  ClipModel& first = *served->replicas_.front();
  OCLIP_ASSIGN_OR_RETURN(served->tokenizer_, LoadOrFetchTokenizer(first.config(), config.tokenizer));
  served->preprocess_.image_size = first.config().vision.image_size;
  served->preprocess_.mean = first.config().image_mean;
  served->preprocess_.std = first.config().image_std;
  served->default_templates_ = {kDefaultTemplate};
  if (!config.templates_file.empty()) {
    OCLIP_ASSIGN_OR_RETURN(served->default_templates_, ReadTemplateFile(config.templates_file));
  }
  served->embed_dim_ = first.config().embed_dim;
  served->logit_scale_ = first.logit_scale().detach().to(torch::kCPU, torch::kFloat);
  for (const auto& replica : served->replicas_) OCLIP_RETURN_IF_ERROR(served->Warmup(*replica));
  for (int i = 0; i < static_cast<int>(served->replicas_.size()); ++i) {
    served->workers_.emplace_back(&ServedModel::WorkerLoop, served.get(), i);
  }
  return served;
}

ServedModel::~ServedModel() {
  scheduler_.Close();
  for (std::thread& worker : workers_) worker.join();
}

absl::Status ServedModel::Warmup(ClipModel& replica) {
  // The first forward pass allocates and picks kernels; do it before the
  // model reports ready so the first client does not pay for it.
  torch::InferenceMode inference;
  const int64_t s = preprocess_.image_size;
  OCLIP_RETURN_IF_ERROR(replica.EncodeImage(torch::zeros({1, 3, s, s})).status());
  const std::vector<std::string> text = {""};
  std::vector<int64_t> ids = tokenizer_->Tokenize(text);
  torch::Tensor tokens =
      torch::from_blob(ids.data(), {1, tokenizer_->context_length()}, torch::kLong).clone();
  return replica.EncodeText(tokens).status();
}

absl::Status ServedModel::Enqueue(Lane lane, std::vector<WorkItem> items) {
  OCLIP_RETURN_IF_ERROR(scheduler_.Enqueue(static_cast<int>(lane), std::move(items)));
  queue_depth_->Set(scheduler_.size());
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> ServedModel::BuildClassifier(
    const std::vector<std::string>& labels, const std::vector<std::string>& templates) {
  torch::InferenceMode inference;
  OCLIP_ASSIGN_OR_RETURN(torch::Tensor classifier,
                         BuildZeroShotClassifier(*replicas_.front(), *tokenizer_, labels, templates));
  return classifier.to(torch::kCPU, torch::kFloat);
}

void ServedModel::WorkerLoop(int replica_index) {
  pthread_setname_np(pthread_self(), "oclip-worker");
  // LibTorch's intra-op thread count is per thread until initialised.
  at::init_num_threads();
  torch::InferenceMode inference;
  ClipModel& replica = *replicas_[replica_index];
  BatchScheduler<WorkItem>::Batch batch;
  while (scheduler_.NextBatch(&batch)) {
    queue_depth_->Set(scheduler_.size());
    for (WorkItem& item : batch.dropped) {
      const absl::Status reason = item.ticket->DropReason();
      const char* label = absl::IsDeadlineExceeded(reason) ? "deadline"
                          : absl::IsCancelled(reason)        ? "cancelled"
                                                             : "failed";
      metrics_->items_dropped->WithLabels({config_.name, label})->Increment();
      item.ticket->OnError(item.index, reason);
    }
    if (!batch.items.empty()) RunBatch(replica, batch);
    batch = {};
  }
}

void ServedModel::RunBatch(ClipModel& replica, BatchScheduler<WorkItem>::Batch& batch) {
  const absl::Time start = absl::Now();
  Histogram* queue_time = metrics_->stage_duration->WithLabels({config_.name, "queue"});
  for (absl::Time enqueued : batch.enqueue_times) {
    queue_time->Observe(absl::ToDoubleSeconds(start - enqueued));
  }
  const int n = static_cast<int>(batch.items.size());
  std::vector<torch::Tensor> inputs;
  inputs.reserve(n);
  for (const WorkItem& item : batch.items) inputs.push_back(item.input);

  absl::StatusOr<torch::Tensor> features;
  try {
    // Items are preprocessed before they are queued (so a bad image is
    // refused before it takes a queue slot, and decoding overlaps the model),
    // which costs this one copy into the batch: ~0.6 MB per 224px image,
    // tens of microseconds against a forward pass of milliseconds.
    torch::Tensor stacked = torch::stack(inputs);
    if (!replica.device().is_cpu()) stacked = stacked.pin_memory();
    stacked = stacked.to(replica.device(), /*non_blocking=*/true);
    features = batch.lane == static_cast<int>(Lane::kImages) ? replica.EncodeImage(stacked)
                                                             : replica.EncodeText(stacked);
    if (features.ok()) features = features->to(torch::kCPU, torch::kFloat);
  } catch (const std::exception& e) {
    features = absl::InternalError(absl::StrCat("running the batch failed: ", e.what()));
  }
  metrics_->stage_duration->WithLabels({config_.name, "model"})->Observe(SecondsSince(start));
  metrics_->batch_size->WithLabels({config_.name, LaneName(batch.lane)})->Observe(n);
  if (!features.ok()) {
    LogError(absl::StrCat("model ", config_.name, ": ", features.status().message()));
    for (WorkItem& item : batch.items) item.ticket->OnError(item.index, features.status());
    return;
  }
  metrics_->items->WithLabels({config_.name, LaneName(batch.lane)})->Increment(n);
  for (int i = 0; i < n; ++i) {
    batch.items[i].ticket->OnResult(batch.items[i].index, (*features)[i]);
  }
}

}  // namespace oclip
