// `oclip serve` assembled: the gRPC server (oclip.v1.Clip, grpc.health.v1,
// server reflection; TLS/mTLS and bearer tokens as configured), the CPU pool,
// the models (loaded in the background, one after the other, so the server
// answers health checks while it loads), the search indexes (opened before
// the server listens) and the Prometheus metrics page.
//
// Health: one service per model name plus "" for the whole server, each
// NOT_SERVING until its model (for "": every model) is loaded and warmed up,
// and all NOT_SERVING from the moment shutdown begins.
//
// Shutdown(grace): new calls get UNAVAILABLE, calls already accepted run to
// completion for up to `grace` (then gRPC cancels them), the pool and the
// model workers drain, every thread is joined. A model still loading when
// shutdown begins is waited for (loading cannot be interrupted).
//
// Errors from Start(): INVALID_ARGUMENT (config), NOT_FOUND (TLS or token
// files, index files), DATA_LOSS (an unreadable index), UNAVAILABLE (a port cannot be bound). Model load failures arrive
// through `on_models_loaded`.
//
// Thread safety: Shutdown() may be called from any one thread; the accessors
// are thread-safe.

#ifndef OCLIP_SERVER_CLIP_SERVER_H_
#define OCLIP_SERVER_CLIP_SERVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/metrics.h"
#include "core/thread_pool.h"
#include "server/clip_service.h"
#include "server/index_registry.h"
#include "server/metrics_http.h"
#include "server/model_registry.h"
#include "server/server_config.h"
#include "server/serving_metrics.h"

namespace oclip {

class ClipServer {
 public:
  // Called once from the loader thread: OK when every model is ready, or
  // the first load error (the remaining models are not loaded).
  using LoadedCallback = std::function<void(const absl::Status&)>;

  static absl::StatusOr<std::unique_ptr<ClipServer>> Start(const ServerConfig& config,
                                                           LoadedCallback on_models_loaded);
  ~ClipServer();  // Shutdown(absl::ZeroDuration()) unless already shut down.

  ClipServer(const ClipServer&) = delete;
  ClipServer& operator=(const ClipServer&) = delete;

  int port() const { return port_; }
  // -1 when the metrics page is off.
  int metrics_port() const { return metrics_http_ ? metrics_http_->port() : -1; }

  void Shutdown(absl::Duration grace);

 private:
  explicit ClipServer(const ServerConfig& config);

  void LoadModels(LoadedCallback on_models_loaded);

  const ServerConfig config_;
  ServingMetrics metrics_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<IndexRegistry> indexes_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<ClipService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::thread loader_;  // Joined in Shutdown().
  std::atomic<bool> stopping_{false};
  bool shut_down_ = false;
  int port_ = 0;
};

}  // namespace oclip

#endif  // OCLIP_SERVER_CLIP_SERVER_H_
