#include "server/clip_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const TlsConfig& tls) {
  if (tls.cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      tls.client_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                 : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  OCLIP_ASSIGN_OR_RETURN(pair.private_key, ReadFileToString(tls.key_file));
  OCLIP_ASSIGN_OR_RETURN(pair.cert_chain, ReadFileToString(tls.cert_file));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_file.empty()) {
    OCLIP_ASSIGN_OR_RETURN(options.pem_root_certs, ReadFileToString(tls.client_ca_file));
  }
  return grpc::SslServerCredentials(options);
}

int HardwareThreads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

}  // namespace

ClipServer::ClipServer(const ServerConfig& config)
    : config_(config), metrics_(GlobalMetrics()) {}

absl::StatusOr<std::unique_ptr<ClipServer>> ClipServer::Start(const ServerConfig& config,
                                                              LoadedCallback on_models_loaded) {
  OCLIP_RETURN_IF_ERROR(ValidateServerConfig(config));
  std::unique_ptr<ClipServer> server(new ClipServer(config));
  ClipServiceOptions service_options;
  service_options.limits = config.limits;
  OCLIP_ASSIGN_OR_RETURN(service_options.auth_tokens, LoadAuthTokens(config.auth));
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                         MakeCredentials(config.tls));

  torch::set_num_threads(config.torch_threads > 0 ? config.torch_threads : HardwareThreads());
  server->pool_ = std::make_unique<ThreadPool>(config.preprocess_threads);
  const std::string default_model =
      config.default_model.empty() ? config.models.front().name : config.default_model;
  server->registry_ = std::make_unique<ModelRegistry>(config.models, default_model);
  OCLIP_ASSIGN_OR_RETURN(server->indexes_, IndexRegistry::Load(config.indexes, default_model));
  for (const ServedIndex& index : server->indexes_->indexes()) {
    LogInfo(absl::StrCat("index ", index.config.name, ": ", index.folder->size(), " ",
                         index.config.kind, " vectors of ", index.folder->dim(), " dims",
                         index.folder->vectors().memory_mapped() ? " (memory-mapped)" : ""));
  }
  server->service_ = std::make_unique<ClipService>(service_options, server->registry_.get(),
                                                   server->indexes_.get(), server->pool_.get(),
                                                   &server->metrics_);

  if (config.metrics_port >= 0) {
    MetricsHttpServerOptions metrics_options;
    metrics_options.host = config.metrics_host;
    metrics_options.port = config.metrics_port;
    OCLIP_ASSIGN_OR_RETURN(server->metrics_http_,
                           MetricsHttpServer::Start(metrics_options, &GlobalMetrics()));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = absl::StrCat(config.host, ":", config.port);
  builder.AddListeningPort(address, credentials, &server->port_);
  // Up to twice the limit is read, so that the service can answer an
  // oversized request with INVALID_ARGUMENT; beyond that gRPC refuses it
  // unread (RESOURCE_EXHAUSTED), which bounds the memory a client can take.
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(2 * config.limits.max_message_bytes, std::numeric_limits<int>::max())));
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address,
                                               " (in use, or not a local address?)"));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  health->SetServingStatus("", false);
  for (const ModelServingConfig& model : config.models) {
    health->SetServingStatus(model.name, false);
    server->metrics_.model_ready->WithLabels({model.name})->Set(0);
  }
  server->loader_ = std::thread(&ClipServer::LoadModels, server.get(), std::move(on_models_loaded));
  return server;
}

void ClipServer::LoadModels(LoadedCallback on_models_loaded) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  for (const ModelServingConfig& config : config_.models) {
    if (stopping_.load()) return;
    const absl::Time start = absl::Now();
    LogInfo(absl::StrCat("loading model ", config.name, " (", config.model, ", ",
                         config.pretrained, ")"));
    absl::StatusOr<std::unique_ptr<ServedModel>> model =
        ServedModel::Load(config, config_.limits.classifier_cache_size, &metrics_);
    if (!model.ok()) {
      absl::Status error(model.status().code(), absl::StrCat("model ", config.name, ": ",
                                                             model.status().message()));
      LogError(error.ToString());
      on_models_loaded(error);
      return;
    }
    // An index searched through this model must hold vectors of its size.
    absl::Status fits = indexes_->CheckModel(config.name, (*model)->embed_dim());
    if (!fits.ok()) {
      LogError(fits.ToString());
      on_models_loaded(fits);
      return;
    }
    registry_->Add(*std::move(model));
    metrics_.model_ready->WithLabels({config.name})->Set(1);
    if (!stopping_.load()) health->SetServingStatus(config.name, true);
    LogInfo(absl::StrCat("model ", config.name, " ready in ",
                         absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1)))));
  }
  if (!stopping_.load()) health->SetServingStatus("", true);
  on_models_loaded(absl::OkStatus());
}

void ClipServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  stopping_.store(true);
  if (server_ == nullptr) return;  // Start() failed before the server ran.
  // Health first, so that load balancers stop sending before calls are
  // refused; then refuse new calls and let the accepted ones finish.
  server_->GetHealthCheckService()->Shutdown();
  service_->StartDraining();
  // Wait for our own calls rather than in grpc::Server::Shutdown alone: that
  // also waits for idle client connections to go away (seconds with a client
  // that keeps its channel open), where there is nothing left to finish.
  if (!service_->WaitForCallsToFinish(absl::Now() + grace)) {
    LogWarning("shutdown grace period over: cancelling the calls still running");
  }
  // Calls that arrive meanwhile are refused with UNAVAILABLE by the
  // draining service within microseconds; a short deadline lets them get
  // that answer rather than gRPC's CANCELLED.
  server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  if (loader_.joinable()) loader_.join();
  // Every call is finished: nothing can reach the pool or the models now.
  pool_.reset();
  registry_.reset();
  metrics_http_.reset();
  LogInfo("server stopped");
}

ClipServer::~ClipServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace oclip
