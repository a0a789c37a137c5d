// oclip.v1.Clip over the callback API: each handler authenticates,
// validates, hands the work to the CPU pool (decode, tokenize) and the
// model's batcher, and returns at once; the reply is sent from whichever
// thread completes the work. No gRPC thread blocks, and every call is
// finished exactly once, with its status code (see proto/oclip/v1/clip.proto
// for the codes), cancelled and refused calls included.
//
// Lifetime: the registries, pool and metrics must outlive the service, and the
// gRPC server must be shut down (every call finished) before the pool and
// the models are destroyed.
//
// Thread safety: the handlers run concurrently on gRPC's threads.

#ifndef OCLIP_SERVER_CLIP_SERVICE_H_
#define OCLIP_SERVER_CLIP_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/thread_pool.h"
#include "oclip/v1/clip.grpc.pb.h"
#include "server/encode_ticket.h"
#include "server/grpc_util.h"
#include "server/index_registry.h"
#include "server/model_registry.h"
#include "server/server_config.h"
#include "server/serving_metrics.h"

namespace oclip {

struct ClipServiceOptions {
  LimitsConfig limits;
  // Bearer tokens; empty = no authentication.
  std::vector<std::string> auth_tokens;
  // Requests a stream may have in flight or answered but not yet sent
  // before the server stops reading from it (back-pressure on bulk clients,
  // and a bound on what a client that never reads can make us hold).
  int stream_window = 64;
};

class ClipService final : public v1::Clip::CallbackService {
 public:
  ClipService(const ClipServiceOptions& options, ModelRegistry* models,
              const IndexRegistry* indexes, ThreadPool* pool, ServingMetrics* metrics);

  // From now on new calls get UNAVAILABLE; calls already accepted go on.
  void StartDraining() { draining_.store(true); }
  // Blocks until every accepted call is done (true) or `deadline` passed.
  bool WaitForCallsToFinish(absl::Time deadline);

  grpc::ServerUnaryReactor* EncodeImage(grpc::CallbackServerContext* context,
                                        const v1::EncodeImageRequest* request,
                                        v1::EncodeResponse* response) override;
  grpc::ServerUnaryReactor* EncodeText(grpc::CallbackServerContext* context,
                                       const v1::EncodeTextRequest* request,
                                       v1::EncodeResponse* response) override;
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const v1::ClassifyRequest* request,
                                     v1::ClassifyResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerBidiReactor<v1::EncodeImageStreamRequest, v1::EncodeImageStreamResponse>*
  EncodeImageStream(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Search(grpc::CallbackServerContext* context,
                                   const v1::SearchRequest* request,
                                   v1::SearchResponse* response) override;

  // The parts the reactors share (public for the stream reactor).

  // Authentication and draining.
  absl::Status CheckAccess(const grpc::CallbackServerContext& context) const;
  // CheckAccess(); then the model (empty name = default).
  absl::StatusOr<ServedModel*> Admit(const grpc::CallbackServerContext& context,
                                     const std::string& model) const;
  // INVALID_ARGUMENT for a request larger than limits.max_message_bytes
  // (gRPC itself refuses twice that with RESOURCE_EXHAUSTED, unread).
  absl::Status CheckMessageSize(const google::protobuf::Message& request) const;
  // Count and per-image limits; INVALID_ARGUMENT naming the image.
  absl::Status ValidateImages(
      const google::protobuf::RepeatedPtrField<v1::ImageInput>& images) const;
  // Decodes and preprocesses `images` on the pool, then enqueues them under
  // `ticket` and ends its preparation. `images` must stay valid until then.
  void SubmitImages(ServedModel* model,
                    const google::protobuf::RepeatedPtrField<v1::ImageInput>* images,
                    std::shared_ptr<EncodeTicket> ticket);
  // The same for texts (tokenized on the pool).
  void SubmitTexts(ServedModel* model, const google::protobuf::RepeatedPtrField<std::string>* texts,
                   std::shared_ptr<EncodeTicket> ticket);

  ServingMetrics* metrics() const { return metrics_; }
  // Reactors report their lifetime, so that shutdown knows when the
  // accepted calls are done.
  void CallStarted();
  void CallDone();
  const ClipServiceOptions& options() const { return options_; }

 private:
  const ClipServiceOptions options_;
  const TokenAuthenticator authenticator_;
  ModelRegistry* const models_;
  const IndexRegistry* const indexes_;
  ThreadPool* const pool_;
  ServingMetrics* const metrics_;
  std::atomic<bool> draining_{false};
  absl::Mutex calls_mu_;
  int active_calls_ ABSL_GUARDED_BY(calls_mu_) = 0;
};

// Fills `response` from float [n, D] CPU features, L2-normalizing each row
// if asked.
void FillEncodeResponse(const torch::Tensor& features, bool normalize,
                        const std::string& model_name, v1::EncodeResponse* response);

// The call's deadline as absl::Time (InfiniteFuture for none).
absl::Time CallDeadline(const grpc::CallbackServerContext& context);

}  // namespace oclip

#endif  // OCLIP_SERVER_CLIP_SERVICE_H_
