// A model as the server runs it: one replica of a CLIP checkpoint per
// configured device, its tokenizer and preprocessing, the dynamic batcher in
// front of them and one worker thread per replica.
//
// Requests reach it as prepared WorkItems (a preprocessed image or a token
// row, tagged with the EncodeTicket of their call). Items of all calls share
// one bounded queue with two lanes, images and texts; a worker takes a batch
// of one lane when it is full (max_batch_size) or its oldest item has waited
// max_queue_delay, runs the replica on it and hands each item its feature
// row. Items whose call was cancelled or whose deadline passed are dropped
// when met, never computed. Workers share the queue, so several devices of
// one model balance by pulling, not by assignment.
//
// Errors: Load() returns the loader's error (NOT_FOUND checkpoint,
// INVALID_ARGUMENT config, FAILED_PRECONDITION device or precision the build
// cannot run). Enqueue() returns RESOURCE_EXHAUSTED when the queue has no room
// for the whole request, UNAVAILABLE once shutting down.
//
// Thread safety: all const methods and Enqueue() are thread-safe. The
// destructor closes the queue, lets the workers finish what is queued and
// joins them.

#ifndef OCLIP_SERVER_SERVED_MODEL_H_
#define OCLIP_SERVER_SERVED_MODEL_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "model/clip_model.h"
#include "model/image/preprocess.h"
#include "model/tokenizer/tokenizer.h"
#include "server/batch_scheduler.h"
#include "server/classifier_cache.h"
#include "server/encode_ticket.h"
#include "server/server_config.h"
#include "server/serving_metrics.h"

namespace oclip {

// One input of a call on its way to a model.
struct WorkItem {
  std::shared_ptr<EncodeTicket> ticket;
  int index = 0;        // Position in the call.
  torch::Tensor input;  // Image: float [3, S, S]; text: int64 [context_length].
};

enum class Lane : int { kImages = 0, kTexts = 1 };

class ServedModel {
 public:
  // Loads the checkpoint onto every device, loads the tokenizer, runs one
  // warm-up batch per lane on every replica and starts the workers. Blocks
  // for as long as that takes (call it from a loader thread).
  // `classifier_cache_size` comes from the server's limits.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Load(const ModelServingConfig& config,
                                                           int classifier_cache_size,
                                                           ServingMetrics* metrics);
  ~ServedModel();

  const ModelServingConfig& serving_config() const { return config_; }
  const ModelConfig& model_config() const { return replicas_.front()->config(); }
  const PreprocessOptions& preprocessing() const { return preprocess_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // The templates Classify uses when a request gives none.
  const std::vector<std::string>& default_templates() const { return default_templates_; }
  int64_t embed_dim() const { return embed_dim_; }
  // exp() of it scales Classify's logits; float scalar on the CPU.
  const torch::Tensor& logit_scale() const { return logit_scale_; }
  ClassifierCache& classifier_cache() { return classifier_cache_; }

  // All of `items` (of one call) or none.
  absl::Status Enqueue(Lane lane, std::vector<WorkItem> items);

  // Builds a zero-shot classifier on the first replica, on the caller's
  // thread: float [embed_dim, labels] on the CPU.
  absl::StatusOr<torch::Tensor> BuildClassifier(const std::vector<std::string>& labels,
                                                const std::vector<std::string>& templates);

 private:
  ServedModel(const ModelServingConfig& config, int classifier_cache_size,
              ServingMetrics* metrics);

  absl::Status Warmup(ClipModel& replica);
  void WorkerLoop(int replica_index);
  void RunBatch(ClipModel& replica, BatchScheduler<WorkItem>::Batch& batch);

  const ModelServingConfig config_;
  ServingMetrics* const metrics_;
  std::vector<std::shared_ptr<ClipModel>> replicas_;
  std::unique_ptr<Tokenizer> tokenizer_;
  PreprocessOptions preprocess_;
  std::vector<std::string> default_templates_;
  int64_t embed_dim_ = 0;
  torch::Tensor logit_scale_;
  ClassifierCache classifier_cache_;
  BatchScheduler<WorkItem> scheduler_;
  Gauge* queue_depth_;
  std::vector<std::thread> workers_;  // One per replica; joined in ~ServedModel.
};

// Parses "cpu", "cuda", "cuda:N"; FAILED_PRECONDITION for CUDA devices this
// build or machine lacks.
absl::StatusOr<torch::Device> ParseServingDevice(const std::string& device);

}  // namespace oclip

#endif  // OCLIP_SERVER_SERVED_MODEL_H_
