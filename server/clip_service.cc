#include "server/clip_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "model/image/preprocess.h"
#include "model/zero_shot.h"
#include "server/request_validation.h"

namespace oclip {
namespace {

using google::protobuf::RepeatedPtrField;

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

// A unary call's reactor: counts the call in the metrics when it finishes,
// forwards a client cancel to the call's ticket, deletes itself when gRPC
// is done with it.
class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(const char* rpc, ClipService* service)
      : rpc_(rpc), service_(service), metrics_(service->metrics()), start_(absl::Now()) {
    service_->CallStarted();
  }

  // The ticket to cancel if the client goes away (at once if it already has).
  void Track(std::shared_ptr<EncodeTicket> ticket) {
    {
      absl::MutexLock lock(&mu_);
      if (!cancelled_) {
        ticket_ = std::move(ticket);
        return;
      }
    }
    ticket->Cancel();
  }

  void Reply(const absl::Status& status) {
    metrics_->requests->WithLabels({rpc_, StatusCodeName(status.code())})->Increment();
    metrics_->request_duration->WithLabels({rpc_})->Observe(SecondsSince(start_));
    Finish(ToGrpcStatus(status));
  }

  void OnCancel() override {
    std::shared_ptr<EncodeTicket> ticket;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      ticket = ticket_;
    }
    if (ticket) ticket->Cancel();
  }

  void OnDone() override {
    service_->CallDone();
    delete this;
  }

 private:
  const char* const rpc_;
  ClipService* const service_;
  ServingMetrics* const metrics_;
  const absl::Time start_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<EncodeTicket> ticket_ ABSL_GUARDED_BY(mu_);
};

// Image bytes from an ImageInput: the inline data, or the file a permitted
// file:// URI names. `storage` holds bytes read from a file.
absl::StatusOr<absl::string_view> ImageBytes(const v1::ImageInput& input,
                                             const LimitsConfig& limits, std::string* storage) {
  if (input.source_case() == v1::ImageInput::kData) return absl::string_view(input.data());
  const std::string& uri = input.uri();
  constexpr absl::string_view kFileScheme = "file://";
  if (!absl::StartsWith(uri, kFileScheme)) {
    return absl::InvalidArgumentError(absl::StrCat("uri '", uri, "': only file:// URIs are read"));
  }
  OCLIP_ASSIGN_OR_RETURN(*storage, ReadFileToString(uri.substr(kFileScheme.size())));
  if (static_cast<int64_t>(storage->size()) > limits.max_image_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("uri '", uri, "': ", storage->size(),
                                                   " bytes, more than the limit of ",
                                                   limits.max_image_bytes));
  }
  return absl::string_view(*storage);
}

// The preprocessing of one request's images, fanned out over the pool: each
// image lands in its own slot; the last one to finish enqueues them all, or
// fails the ticket with every bad image's index.
struct ImagePreparation {
  ImagePreparation(int n) : items(n), errors(n), remaining(n) {}

  std::vector<WorkItem> items;
  std::vector<std::string> errors;  // Per image; written by its own task only.
  std::atomic<int> remaining;
};

}  // namespace

absl::Time CallDeadline(const grpc::CallbackServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  // gRPC reports "no deadline" as a far-future time point.
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 100)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

void FillEncodeResponse(const torch::Tensor& features, bool normalize,
                        const std::string& model_name, v1::EncodeResponse* response) {
  torch::Tensor rows = features;
  if (normalize) {
    rows = torch::nn::functional::normalize(rows,
                                            torch::nn::functional::NormalizeFuncOptions().dim(-1));
  }
  rows = rows.to(torch::kFloat).contiguous();
  const int64_t n = rows.size(0), dim = rows.size(1);
  const float* data = rows.data_ptr<float>();
  response->set_model(model_name);
  response->set_dim(static_cast<int32_t>(dim));
  response->mutable_embeddings()->Reserve(static_cast<int>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto* values = response->add_embeddings()->mutable_values();
    values->Resize(static_cast<int>(dim), 0.0f);
    std::copy(data + i * dim, data + (i + 1) * dim, values->mutable_data());
  }
}

ClipService::ClipService(const ClipServiceOptions& options, ModelRegistry* models,
                         const IndexRegistry* indexes, ThreadPool* pool, ServingMetrics* metrics)
    : options_(options),
      authenticator_(options.auth_tokens),
      models_(models),
      indexes_(indexes),
      pool_(pool),
      metrics_(metrics) {}

void ClipService::CallStarted() {
  absl::MutexLock lock(&calls_mu_);
  ++active_calls_;
}

void ClipService::CallDone() {
  absl::MutexLock lock(&calls_mu_);
  --active_calls_;
}

bool ClipService::WaitForCallsToFinish(absl::Time deadline) {
  absl::MutexLock lock(&calls_mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(calls_mu_) { return active_calls_ == 0; };
  return calls_mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

absl::Status ClipService::CheckAccess(const grpc::CallbackServerContext& context) const {
  OCLIP_RETURN_IF_ERROR(authenticator_.Check(context));
  if (draining_.load()) return absl::UnavailableError("the server is shutting down");
  return absl::OkStatus();
}

absl::StatusOr<ServedModel*> ClipService::Admit(const grpc::CallbackServerContext& context,
                                                const std::string& model) const {
  OCLIP_RETURN_IF_ERROR(CheckAccess(context));
  return models_->Find(model);
}

absl::Status ClipService::CheckMessageSize(const google::protobuf::Message& request) const {
  const size_t size = request.ByteSizeLong();
  if (static_cast<int64_t>(size) > options_.limits.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the request is ", size,
                                                   " bytes; the limit is ",
                                                   options_.limits.max_message_bytes));
  }
  return absl::OkStatus();
}

absl::Status ClipService::ValidateImages(const RepeatedPtrField<v1::ImageInput>& images) const {
  return ValidateImageInputs(images, options_.limits);
}

void ClipService::SubmitImages(ServedModel* model, const RepeatedPtrField<v1::ImageInput>* images,
                               std::shared_ptr<EncodeTicket> ticket) {
  const int n = images->size();
  auto prep = std::make_shared<ImagePreparation>(n);
  PreprocessOptions preprocess = model->preprocessing();
  preprocess.max_pixels = options_.limits.max_image_pixels;
  Histogram* preprocess_time =
      metrics_->stage_duration->WithLabels({model->serving_config().name, "preprocess"});
  for (int i = 0; i < n; ++i) {
    pool_->Schedule([this, model, images, ticket, prep, preprocess, preprocess_time, i, n] {
      if (ticket->IsLive()) {
        const absl::Time start = absl::Now();
        const int64_t s = preprocess.image_size;
        torch::Tensor pixels = torch::empty({3, s, s});
        std::string storage;
        absl::StatusOr<absl::string_view> bytes =
            ImageBytes(images->Get(i), options_.limits, &storage);
        absl::Status status = bytes.status();
        if (status.ok()) status = PreprocessImageBytes(*bytes, preprocess, pixels.data_ptr<float>());
        if (status.ok()) {
          prep->items[i] = WorkItem{ticket, i, std::move(pixels)};
        } else {
          prep->errors[i] = absl::StrCat("image ", i, ": ", status.message());
        }
        preprocess_time->Observe(SecondsSince(start));
      }
      if (prep->remaining.fetch_sub(1) != 1) return;
      // The last image of the request: everything else is written.
      std::vector<std::string> errors;
      for (std::string& error : prep->errors) {
        if (!error.empty()) errors.push_back(std::move(error));
      }
      if (!errors.empty()) {
        ticket->Fail(absl::InvalidArgumentError(
            absl::StrCat(errors.size(), " of ", n, " images could not be read: ",
                         absl::StrJoin(errors, "; "))));
      } else if (!ticket->IsLive()) {
        ticket->Fail(ticket->DropReason());  // Expired or cancelled meanwhile.
      } else {
        absl::Status enqueued = model->Enqueue(Lane::kImages, std::move(prep->items));
        if (!enqueued.ok()) ticket->Fail(enqueued);
      }
      ticket->EndPreparation();
    });
  }
}

void ClipService::SubmitTexts(ServedModel* model, const RepeatedPtrField<std::string>* texts,
                              std::shared_ptr<EncodeTicket> ticket) {
  Histogram* preprocess_time =
      metrics_->stage_duration->WithLabels({model->serving_config().name, "preprocess"});
  pool_->Schedule([model, texts, ticket, preprocess_time] {
    if (ticket->IsLive()) {
      const absl::Time start = absl::Now();
      const std::vector<std::string> strings(texts->begin(), texts->end());
      std::vector<int64_t> ids = model->tokenizer().Tokenize(strings);
      const int64_t n = static_cast<int64_t>(strings.size());
      torch::Tensor tokens =
          torch::from_blob(ids.data(), {n, model->tokenizer().context_length()}, torch::kLong)
              .clone();
      std::vector<WorkItem> items;
      items.reserve(n);
      for (int64_t i = 0; i < n; ++i) items.push_back(WorkItem{ticket, static_cast<int>(i), tokens[i]});
      preprocess_time->Observe(SecondsSince(start) / static_cast<double>(n));
      absl::Status enqueued = model->Enqueue(Lane::kTexts, std::move(items));
      if (!enqueued.ok()) ticket->Fail(enqueued);
    } else {
      ticket->Fail(ticket->DropReason());  // Expired or cancelled before its turn.
    }
    ticket->EndPreparation();
  });
}

grpc::ServerUnaryReactor* ClipService::EncodeImage(grpc::CallbackServerContext* context,
                                                   const v1::EncodeImageRequest* request,
                                                   v1::EncodeResponse* response) {
  auto* call = new UnaryCall("EncodeImage", this);
  absl::StatusOr<ServedModel*> model = Admit(*context, request->model());
  absl::Status valid = model.ok() ? CheckMessageSize(*request) : model.status();
  if (valid.ok()) valid = ValidateImages(request->images());
  if (!valid.ok()) {
    call->Reply(valid);
    return call;
  }
  const std::string name = (*model)->serving_config().name;
  auto ticket = std::make_shared<EncodeTicket>(
      request->images_size(), CallDeadline(*context),
      [call, request, response, name](absl::StatusOr<torch::Tensor> features) {
        if (features.ok()) FillEncodeResponse(*features, request->normalize(), name, response);
        call->Reply(features.status());
      });
  call->Track(ticket);
  SubmitImages(*model, &request->images(), std::move(ticket));
  return call;
}

grpc::ServerUnaryReactor* ClipService::EncodeText(grpc::CallbackServerContext* context,
                                                  const v1::EncodeTextRequest* request,
                                                  v1::EncodeResponse* response) {
  auto* call = new UnaryCall("EncodeText", this);
  absl::StatusOr<ServedModel*> model = Admit(*context, request->model());
  absl::Status valid = model.ok() ? CheckMessageSize(*request) : model.status();
  if (valid.ok()) valid = ValidateTextInputs(request->texts(), options_.limits);
  if (!valid.ok()) {
    call->Reply(valid);
    return call;
  }
  const std::string name = (*model)->serving_config().name;
  auto ticket = std::make_shared<EncodeTicket>(
      request->texts_size(), CallDeadline(*context),
      [call, request, response, name](absl::StatusOr<torch::Tensor> features) {
        if (features.ok()) FillEncodeResponse(*features, request->normalize(), name, response);
        call->Reply(features.status());
      });
  call->Track(ticket);
  SubmitTexts(*model, &request->texts(), std::move(ticket));
  return call;
}

namespace {

// Joins a Classify call's two halves, the image features (the ticket) and
// the classifier (cache or build), and replies once both are in or either
// failed. A classifier failure is routed through the ticket while images
// are still being prepared, so the reply never precedes the end of
// preparation (which reads the request).
class ClassifyJoin {
 public:
  ClassifyJoin(UnaryCall* call, const v1::ClassifyRequest* request, v1::ClassifyResponse* response,
               std::string model_name, torch::Tensor logit_scale)
      : call_(call),
        request_(request),
        response_(response),
        model_name_(std::move(model_name)),
        logit_scale_(std::move(logit_scale)) {}

  void SetTicket(std::shared_ptr<EncodeTicket> ticket) { ticket_ = std::move(ticket); }

  void OnFeatures(absl::StatusOr<torch::Tensor> features) {
    absl::Status failure;
    torch::Tensor classifier;
    {
      absl::MutexLock lock(&mu_);
      if (!features.ok()) {
        failure = features.status();
      } else if (!classifier_status_.ok()) {
        failure = classifier_status_;
      } else {
        features_ = *features;
        if (!classifier_.defined()) return;  // The classifier replies.
        classifier = classifier_;
      }
    }
    if (!failure.ok()) {
      call_->Reply(failure);
      return;
    }
    ReplyWithLabels(*features, classifier);
  }

  void OnClassifier(absl::StatusOr<torch::Tensor> classifier) {
    torch::Tensor features;
    {
      absl::MutexLock lock(&mu_);
      if (classifier.ok()) {
        classifier_ = *classifier;
        if (!features_.defined()) return;  // The features reply.
        features = features_;
      } else {
        classifier_status_ = classifier.status();
        features = features_;
      }
    }
    if (!classifier.ok()) {
      // With images still on their way, fail them: the ticket replies once
      // their preparation is over. Otherwise reply now.
      if (features.defined()) {
        call_->Reply(classifier.status());
      } else {
        ticket_->Fail(classifier.status());
      }
      return;
    }
    ReplyWithLabels(features, *classifier);
  }

 private:
  void ReplyWithLabels(const torch::Tensor& features, const torch::Tensor& classifier) {
    torch::Tensor probabilities;
    try {
      probabilities = ZeroShotProbabilities(features, classifier, logit_scale_).contiguous();
    } catch (const std::exception& e) {
      call_->Reply(absl::InternalError(absl::StrCat("classification failed: ", e.what())));
      return;
    }
    const int64_t num_labels = probabilities.size(1);
    const int64_t top_k = request_->top_k() <= 0 || request_->top_k() > num_labels
                              ? num_labels
                              : request_->top_k();
    response_->set_model(model_name_);
    std::vector<int> order(num_labels);
    for (int64_t row = 0; row < probabilities.size(0); ++row) {
      const float* p = probabilities.data_ptr<float>() + row * num_labels;
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [p](int a, int b) { return p[a] > p[b]; });
      v1::Classification* classification = response_->add_classifications();
      for (int64_t k = 0; k < top_k; ++k) {
        v1::LabelScore* score = classification->add_labels();
        score->set_label(request_->labels(order[k]));
        score->set_probability(p[order[k]]);
        score->set_index(order[k]);
      }
    }
    call_->Reply(absl::OkStatus());
  }

  UnaryCall* const call_;
  const v1::ClassifyRequest* const request_;
  v1::ClassifyResponse* const response_;
  const std::string model_name_;
  const torch::Tensor logit_scale_;
  std::shared_ptr<EncodeTicket> ticket_;  // Set before either half can arrive.
  absl::Mutex mu_;
  torch::Tensor features_ ABSL_GUARDED_BY(mu_);
  torch::Tensor classifier_ ABSL_GUARDED_BY(mu_);
  absl::Status classifier_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerUnaryReactor* ClipService::Classify(grpc::CallbackServerContext* context,
                                                const v1::ClassifyRequest* request,
                                                v1::ClassifyResponse* response) {
  auto* call = new UnaryCall("Classify", this);
  absl::StatusOr<ServedModel*> model = Admit(*context, request->model());
  absl::Status valid = model.ok() ? CheckMessageSize(*request) : model.status();
  if (valid.ok()) valid = ValidateImages(request->images());
  if (valid.ok()) valid = ValidateClassifyLabels(*request, options_.limits);
  if (!valid.ok()) {
    call->Reply(valid);
    return call;
  }
  ServedModel* served = *model;
  std::vector<std::string> labels(request->labels().begin(), request->labels().end());
  std::vector<std::string> templates(request->templates().begin(), request->templates().end());
  if (templates.empty()) templates = served->default_templates();

  auto join = std::make_shared<ClassifyJoin>(call, request, response,
                                             served->serving_config().name, served->logit_scale());
  auto ticket = std::make_shared<EncodeTicket>(
      request->images_size(), CallDeadline(*context),
      [join](absl::StatusOr<torch::Tensor> features) { join->OnFeatures(std::move(features)); });
  join->SetTicket(ticket);
  call->Track(ticket);
  served->classifier_cache().Get(
      ClassifierCache::Key(labels, templates),
      [served, labels, templates] { return served->BuildClassifier(labels, templates); },
      [this](std::function<void()> task) { pool_->Schedule(std::move(task)); },
      [join](absl::StatusOr<torch::Tensor> classifier) {
        join->OnClassifier(std::move(classifier));
      });
  SubmitImages(served, &request->images(), std::move(ticket));
  return call;
}

namespace {

// EncodeImageStream: reads requests while fewer than `stream_window` are in
// flight, runs each like an EncodeImage call, and writes each answer (or its
// error) as soon as it is ready, one write at a time. The stream finishes
// once the client half-closed and every answer is written; a cancelled
// stream cancels what is in flight and finishes when that has unwound.
//
// State changes happen under mu_; the gRPC operations they call for
// (StartRead, StartWrite, Finish) run after it is released, and nothing
// touches the reactor after Finish (gRPC may delete it from then on).
class ImageStream
    : public grpc::ServerBidiReactor<v1::EncodeImageStreamRequest, v1::EncodeImageStreamResponse> {
 public:
  ImageStream(ClipService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), start_(absl::Now()) {
    service_->CallStarted();
  }

  // Called once by the handler: refuse the stream or start reading.
  void Start(const absl::Status& admitted) {
    if (!admitted.ok()) {
      {
        absl::MutexLock lock(&mu_);
        finished_ = true;
      }
      FinishStream(admitted);
      return;
    }
    Continue();
  }

  void OnReadDone(bool ok) override {
    std::unique_ptr<v1::EncodeImageStreamRequest> message;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok || broken_) {
        reads_done_ = true;
      } else {
        message = std::move(next_);
        ++in_flight_;
      }
    }
    // gRPC does not call OnDone while this reaction runs, so `this` stays
    // valid through Process() even if the stream finishes inside it.
    if (message) Process(std::move(message));
    Continue();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      outbox_.pop_front();
      if (!ok) broken_ = true;
    }
    Continue();
  }

  void OnCancel() override {
    std::vector<std::shared_ptr<EncodeTicket>> tickets;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      for (auto& entry : tickets_) tickets.push_back(entry.second);
    }
    for (auto& ticket : tickets) ticket->Cancel();
    Continue();
  }

  void OnDone() override {
    service_->CallDone();
    delete this;
  }

 private:
  struct Actions {
    v1::EncodeImageStreamResponse* write = nullptr;
    v1::EncodeImageStreamRequest* read = nullptr;
    bool finish = false;
    absl::Status status;
  };

  void Process(std::unique_ptr<v1::EncodeImageStreamRequest> message) {
    const uint64_t id = message->id();
    const v1::EncodeImageRequest& request = message->request();
    absl::StatusOr<ServedModel*> model = service_->Admit(*context_, request.model());
    absl::Status valid = model.ok() ? service_->CheckMessageSize(*message) : model.status();
    if (valid.ok()) valid = service_->ValidateImages(request.images());
    if (!valid.ok()) {
      Answer(id, valid, nullptr);
      return;
    }
    const uint64_t key = next_key_++;
    const std::string name = (*model)->serving_config().name;
    const bool normalize = request.normalize();
    // The callback owns the message: it lives until preparation has ended.
    std::shared_ptr<v1::EncodeImageStreamRequest> owned(std::move(message));
    auto ticket = std::make_shared<EncodeTicket>(
        owned->request().images_size(), CallDeadline(*context_),
        [this, owned, key, id, name, normalize](absl::StatusOr<torch::Tensor> features) {
          v1::EncodeResponse response;
          if (features.ok()) FillEncodeResponse(*features, normalize, name, &response);
          {
            absl::MutexLock lock(&mu_);
            tickets_.erase(key);
          }
          Answer(id, features.status(), features.ok() ? &response : nullptr);
        });
    {
      absl::MutexLock lock(&mu_);
      tickets_[key] = ticket;
    }
    service_->SubmitImages(*model, &owned->request().images(), ticket);
  }

  // Queues the answer to request `id` and retires it from the window. May
  // finish the stream: the caller must not touch `this` afterwards unless it
  // runs inside a gRPC reaction.
  void Answer(uint64_t id, const absl::Status& status, v1::EncodeResponse* response) {
    v1::EncodeImageStreamResponse answer;
    answer.set_id(id);
    answer.set_code(static_cast<int32_t>(status.code()));
    if (!status.ok()) answer.set_error_message(std::string(status.message()));
    if (response != nullptr) answer.mutable_response()->Swap(response);
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (!broken_) outbox_.push_back(std::move(answer));
      actions = NextActionsLocked();
    }
    Run(actions);
  }

  void Continue() {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      actions = NextActionsLocked();
    }
    Run(actions);
  }

  // What the state calls for next: a write, a read, or the end.
  Actions NextActionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions actions;
    if (finished_) return actions;
    if (!broken_ && !writing_ && !outbox_.empty()) {
      writing_ = true;
      actions.write = &outbox_.front();  // deque: stays put while we append.
    }
    // Answers not yet written count against the window too: a client that
    // stops reading stops being read.
    if (!broken_ && !reading_ && !reads_done_ &&
        in_flight_ + static_cast<int>(outbox_.size()) < service_->options().stream_window) {
      next_ = std::make_unique<v1::EncodeImageStreamRequest>();
      reading_ = true;
      actions.read = next_.get();
    }
    if (in_flight_ == 0 && !writing_ && (broken_ || (reads_done_ && outbox_.empty()))) {
      finished_ = true;
      actions.finish = true;
      actions.status =
          broken_ ? absl::CancelledError("the stream was cancelled") : absl::OkStatus();
    }
    return actions;
  }

  void Run(const Actions& actions) {
    if (actions.write != nullptr) StartWrite(actions.write);
    if (actions.read != nullptr) StartRead(actions.read);
    if (actions.finish) FinishStream(actions.status);
  }

  void FinishStream(const absl::Status& status) {
    ServingMetrics* metrics = service_->metrics();
    metrics->requests->WithLabels({"EncodeImageStream", StatusCodeName(status.code())})
        ->Increment();
    metrics->request_duration->WithLabels({"EncodeImageStream"})->Observe(SecondsSince(start_));
    Finish(ToGrpcStatus(status));
  }

  ClipService* const service_;
  grpc::CallbackServerContext* const context_;
  const absl::Time start_;
  uint64_t next_key_ = 0;  // Only touched by OnReadDone (one read at a time).

  absl::Mutex mu_;
  std::unique_ptr<v1::EncodeImageStreamRequest> next_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::EncodeImageStreamResponse> outbox_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::shared_ptr<EncodeTicket>> tickets_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // Cancelled, or a write failed: stop reading and writing, unwind.
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::EncodeImageStreamRequest, v1::EncodeImageStreamResponse>*
ClipService::EncodeImageStream(grpc::CallbackServerContext* context) {
  auto* stream = new ImageStream(this, context);
  absl::Status admitted = authenticator_.Check(*context);
  if (admitted.ok() && draining_.load()) {
    admitted = absl::UnavailableError("the server is shutting down");
  }
  stream->Start(admitted);
  return stream;
}

namespace {

constexpr int kDefaultSearchK = 10;

// What a Search call needs until its reply is sent: the query copied into
// the containers SubmitTexts/SubmitImages read (they stay valid until the
// ticket completes, which is after its preparation ends), and where the
// answer goes.
struct SearchCall {
  UnaryCall* call = nullptr;
  const ServedIndex* index = nullptr;
  int k = 0;
  v1::SearchResponse* response = nullptr;
  ThreadPool* pool = nullptr;
  RepeatedPtrField<std::string> texts;
  RepeatedPtrField<v1::ImageInput> images;
};

// Searches `query` (float [1, dim] on the CPU) on the pool and replies.
void SearchAndReply(std::shared_ptr<SearchCall> search, torch::Tensor query) {
  search->pool->Schedule([search, query = std::move(query)] {
    const torch::Tensor row = query.to(torch::kFloat).contiguous();
    absl::StatusOr<std::vector<std::vector<index::SearchHit>>> hits =
        search->index->folder->Search(absl::MakeConstSpan(row.data_ptr<float>(), row.numel()),
                                      /*num_queries=*/1, search->k);
    if (!hits.ok()) {
      search->call->Reply(absl::Status(
          hits.status().code(),
          absl::StrCat("index ", search->index->config.name, ": ", hits.status().message())));
      return;
    }
    for (index::SearchHit& hit : (*hits)[0]) {
      v1::SearchHit* out = search->response->add_hits();
      out->set_id(hit.id);
      out->set_score(hit.score);
      if (!hit.metadata.has_value()) continue;
      out->set_key(std::move(hit.metadata->key));
      out->set_caption(std::move(hit.metadata->caption));
      out->set_url(std::move(hit.metadata->url));
      out->set_partition(hit.metadata->partition);
      out->set_row(hit.metadata->row);
      out->set_metadata_json(std::move(hit.metadata->json));
    }
    search->call->Reply(absl::OkStatus());
  });
}

// The ticket of a text or image query: its features, normalized as the
// indexed embeddings are, go to the search.
std::shared_ptr<EncodeTicket> QueryTicket(std::shared_ptr<SearchCall> search,
                                          absl::Time deadline) {
  return std::make_shared<EncodeTicket>(
      1, deadline, [search](absl::StatusOr<torch::Tensor> features) {
        if (!features.ok()) {
          search->call->Reply(features.status());
          return;
        }
        SearchAndReply(search, torch::nn::functional::normalize(
                                   features->to(torch::kFloat),
                                   torch::nn::functional::NormalizeFuncOptions().dim(-1)));
      });
}

}  // namespace

grpc::ServerUnaryReactor* ClipService::Search(grpc::CallbackServerContext* context,
                                              const v1::SearchRequest* request,
                                              v1::SearchResponse* response) {
  auto* call = new UnaryCall("Search", this);
  const LimitsConfig& limits = options_.limits;
  absl::Status valid = CheckAccess(*context);
  if (valid.ok()) valid = CheckMessageSize(*request);
  const ServedIndex* index = nullptr;
  if (valid.ok()) {
    absl::StatusOr<const ServedIndex*> found = indexes_->Find(request->index());
    if (found.ok()) {
      index = *found;
    } else {
      valid = found.status();
    }
  }
  const int k = request->k() == 0 ? kDefaultSearchK : request->k();
  if (valid.ok() && (k < 1 || k > limits.max_search_k)) {
    valid = absl::InvalidArgumentError(absl::StrCat("k is ", request->k(), "; it must be 1 to ",
                                                    limits.max_search_k, " (0 means ",
                                                    kDefaultSearchK, ")"));
  }
  auto search = std::make_shared<SearchCall>();
  ServedModel* model = nullptr;
  if (valid.ok()) {
    switch (request->query_case()) {
      case v1::SearchRequest::kEmbedding: {
        const auto& values = request->embedding().values();
        if (values.size() != index->folder->dim()) {
          valid = absl::InvalidArgumentError(
              absl::StrCat("the embedding has ", values.size(), " values; index ",
                           index->config.name, " holds ", index->folder->dim(), "-d vectors"));
        } else if (!std::all_of(values.begin(), values.end(),
                                [](float v) { return std::isfinite(v); })) {
          valid = absl::InvalidArgumentError("the embedding has a NaN or infinite value");
        }
        break;
      }
      case v1::SearchRequest::kText:
        if (static_cast<int64_t>(request->text().size()) > limits.max_text_bytes) {
          valid = absl::InvalidArgumentError(absl::StrCat("the text is ", request->text().size(),
                                                          " bytes; the limit is ",
                                                          limits.max_text_bytes));
        }
        *search->texts.Add() = request->text();
        break;
      case v1::SearchRequest::kImage:
        *search->images.Add() = request->image();
        valid = ValidateImages(search->images);
        break;
      case v1::SearchRequest::QUERY_NOT_SET:
        valid = absl::InvalidArgumentError(
            "the request has no query: set text, image or embedding");
        break;
    }
  }
  if (valid.ok() && request->query_case() != v1::SearchRequest::kEmbedding) {
    absl::StatusOr<ServedModel*> found = models_->Find(index->config.model);
    if (found.ok()) {
      model = *found;
    } else {
      valid = found.status();
    }
  }
  if (!valid.ok()) {
    call->Reply(valid);
    return call;
  }
  search->call = call;
  search->index = index;
  search->k = k;
  search->response = response;
  search->pool = pool_;
  response->set_index(index->config.name);
  switch (request->query_case()) {
    case v1::SearchRequest::kEmbedding: {
      const auto& values = request->embedding().values();
      SearchAndReply(search, torch::from_blob(const_cast<float*>(values.data()),
                                              {1, static_cast<int64_t>(values.size())},
                                              torch::kFloat)
                                 .clone());
      break;
    }
    case v1::SearchRequest::kText: {
      response->set_model(model->serving_config().name);
      std::shared_ptr<EncodeTicket> ticket = QueryTicket(search, CallDeadline(*context));
      call->Track(ticket);
      SubmitTexts(model, &search->texts, std::move(ticket));
      break;
    }
    default: {  // kImage
      response->set_model(model->serving_config().name);
      std::shared_ptr<EncodeTicket> ticket = QueryTicket(search, CallDeadline(*context));
      call->Track(ticket);
      SubmitImages(model, &search->images, std::move(ticket));
      break;
    }
  }
  return call;
}

grpc::ServerUnaryReactor* ClipService::ListModels(grpc::CallbackServerContext* context,
                                                  const v1::ListModelsRequest* /*request*/,
                                                  v1::ListModelsResponse* response) {
  auto* call = new UnaryCall("ListModels", this);
  if (absl::Status auth = authenticator_.Check(*context); !auth.ok()) {
    call->Reply(auth);
    return call;
  }
  for (const ModelRegistry::Entry& entry : models_->List()) {
    v1::ModelInfo* info = response->add_models();
    info->set_name(entry.config->name);
    info->set_architecture(entry.config->model);
    info->set_pretrained(entry.config->pretrained);
    for (const std::string& device : entry.config->devices) info->add_devices(device);
    info->set_precision(std::string(InferencePrecisionName(entry.config->precision)));
    info->set_max_batch_size(entry.config->max_batch_size);
    info->set_is_default(entry.is_default);
    info->set_ready(entry.model != nullptr);
    if (entry.model != nullptr) {
      const ModelConfig& config = entry.model->model_config();
      info->set_architecture(config.name);
      info->set_embed_dim(static_cast<int32_t>(config.embed_dim));
      info->set_image_size(static_cast<int32_t>(config.vision.image_size));
      info->set_context_length(entry.model->tokenizer().context_length());
    }
  }
  call->Reply(absl::OkStatus());
  return call;
}

}  // namespace oclip
