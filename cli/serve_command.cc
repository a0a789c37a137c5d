// `oclip serve`: the gRPC inference server, from server.yaml or from flags
// for the one-model case. Runs until SIGTERM/SIGINT, then shuts down
// gracefully and exits 0; exits 1 when the config is bad, a port cannot be
// bound or a model fails to load.
//
// stdout gets two lines for supervisors and tests, flushed at once:
//   oclip serve: listening on HOST:PORT (metrics on HOST:PORT | metrics off)
//   oclip serve: ready (models: NAME, ...)
// Logs go to stderr.

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <cstdio>
#include <iostream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "core/logging.h"
#include "core/status.h"
#include "server/clip_server.h"
#include "server/server_config.h"

namespace oclip::cli {
namespace {

constexpr int64_t kUnset = -2;

struct ServeFlags {
  std::string config;
  // The one-model case.
  std::string model;
  std::string pretrained;
  std::string tokenizer;
  std::string name;
  std::vector<std::string> devices;
  std::string precision = "fp32";
  int64_t max_batch_size = 32;
  std::string max_queue_delay = "0";
  int64_t queue_capacity = 1024;
  int64_t seed = 0;
  std::string templates;
  std::vector<std::string> indexes;  // NAME=FOLDER
  // Server settings; with --config they override the file's.
  std::string host;
  std::string metrics_host;
  int64_t port = kUnset;
  int64_t metrics_port = kUnset;
  int64_t threads = kUnset;
  int64_t preprocess_threads = kUnset;
  std::string shutdown_grace;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string auth_tokens_file;
  std::string auth_tokens_env;
  bool log_json = false;
};

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& name,
                                                 const std::string& value) {
  absl::Duration duration;
  if (!absl::ParseDuration(value, &duration) || duration < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " '", value, "': expected a duration such as 5ms or 30s"));
  }
  return duration;
}

// The name requests use when --name is not given: the config name, or the
// stem of a JSON config path ("configs/tiny-vit.json" -> "tiny-vit").
std::string DefaultModelName(const std::string& model) {
  if (model.empty()) return "default";
  std::string name = model.substr(model.find_last_of('/') + 1);
  if (absl::EndsWith(name, ".json")) name.resize(name.size() - 5);
  return name.empty() ? "default" : name;
}

absl::StatusOr<ServerConfig> BuildConfig(const ServeFlags& flags) {
  ServerConfig config;
  const bool model_flags = !flags.model.empty() || !flags.pretrained.empty();
  if (!flags.config.empty()) {
    if (model_flags) {
      return absl::InvalidArgumentError(
          "give either --config or --model/--pretrained, not both (models go in server.yaml)");
    }
    OCLIP_ASSIGN_OR_RETURN(config, LoadServerConfig(flags.config));
  } else {
    if (flags.pretrained.empty()) {
      return absl::InvalidArgumentError(
          "give --config server.yaml, or --model and --pretrained for one model");
    }
    ModelServingConfig model;
    model.model = flags.model;
    model.pretrained = flags.pretrained;
    model.tokenizer = flags.tokenizer;
    model.name = !flags.name.empty() ? flags.name : DefaultModelName(flags.model);
    if (!flags.devices.empty()) model.devices = flags.devices;
    OCLIP_ASSIGN_OR_RETURN(model.precision, ParseInferencePrecision(flags.precision));
    model.max_batch_size = static_cast<int>(flags.max_batch_size);
    OCLIP_ASSIGN_OR_RETURN(model.max_queue_delay,
                           ParseDurationFlag("max-queue-delay", flags.max_queue_delay));
    model.queue_capacity = static_cast<int>(flags.queue_capacity);
    model.seed = static_cast<uint64_t>(flags.seed);
    model.templates_file = flags.templates;
    config.models.push_back(std::move(model));
  }
  for (const std::string& spec : flags.indexes) {
    const size_t equals = spec.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == spec.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--index '", spec, "': expected NAME=FOLDER (an `oclip index build` folder)"));
    }
    IndexServingConfig index;
    index.name = spec.substr(0, equals);
    index.folder = spec.substr(equals + 1);
    config.indexes.push_back(std::move(index));
  }
  if (!flags.host.empty()) config.host = flags.host;
  if (!flags.metrics_host.empty()) config.metrics_host = flags.metrics_host;
  if (flags.port != kUnset) config.port = static_cast<int>(flags.port);
  if (flags.metrics_port != kUnset) config.metrics_port = static_cast<int>(flags.metrics_port);
  if (flags.threads != kUnset) config.torch_threads = static_cast<int>(flags.threads);
  if (flags.preprocess_threads != kUnset) {
    config.preprocess_threads = static_cast<int>(flags.preprocess_threads);
  }
  if (!flags.shutdown_grace.empty()) {
    OCLIP_ASSIGN_OR_RETURN(config.shutdown_grace,
                           ParseDurationFlag("shutdown-grace", flags.shutdown_grace));
  }
  if (!flags.tls_cert.empty()) config.tls.cert_file = flags.tls_cert;
  if (!flags.tls_key.empty()) config.tls.key_file = flags.tls_key;
  if (!flags.tls_client_ca.empty()) config.tls.client_ca_file = flags.tls_client_ca;
  if (!flags.auth_tokens_file.empty()) config.auth.tokens_file = flags.auth_tokens_file;
  if (!flags.auth_tokens_env.empty()) config.auth.tokens_env = flags.auth_tokens_env;
  if (flags.log_json) config.json_logs = true;
  OCLIP_RETURN_IF_ERROR(ValidateServerConfig(config));
  return config;
}

// Where the main thread waits: the first of a signal and a failed model load.
class StopReason {
 public:
  void Set(absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (!set_) {
      set_ = true;
      status_ = std::move(status);
    }
  }
  absl::Status Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&set_));
    return status_;
  }

 private:
  absl::Mutex mu_;
  bool set_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// SIGTERM/SIGINT as bytes on a pipe. A handler, not sigwait: libraries
// (OpenBLAS) start threads before main() that would otherwise take the
// signal with its default action. The write end is a global because a signal
// handler can reach nothing else; write() is async-signal-safe.
int g_signal_write_fd = -1;

extern "C" void WriteSignalToPipe(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] ssize_t written = write(g_signal_write_fd, &byte, 1);
}

class SignalPipe {
 public:
  static absl::StatusOr<SignalPipe> Install() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe() failed");
    g_signal_write_fd = fds[1];
    struct sigaction action = {};
    action.sa_handler = WriteSignalToPipe;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, nullptr);
    sigaction(SIGINT, &action, nullptr);
    return SignalPipe(fds[0]);
  }

  // The next signal's number, or 0 after Wake().
  int Wait() {
    char byte = 0;
    while (read(read_fd_, &byte, 1) < 0 && errno == EINTR) {
    }
    return static_cast<unsigned char>(byte);
  }
  void Wake() {
    const char byte = 0;
    [[maybe_unused]] ssize_t written = write(g_signal_write_fd, &byte, 1);
  }

 private:
  explicit SignalPipe(int read_fd) : read_fd_(read_fd) {}
  int read_fd_;
};

absl::Status Serve(const ServeFlags& flags) {
  OCLIP_ASSIGN_OR_RETURN(ServerConfig config, BuildConfig(flags));
  if (config.json_logs) SetLogFormat(LogFormat::kJson);

  OCLIP_ASSIGN_OR_RETURN(SignalPipe signal_pipe, SignalPipe::Install());
  StopReason stop;
  std::vector<std::string> names;
  for (const ModelServingConfig& model : config.models) names.push_back(model.name);
  OCLIP_ASSIGN_OR_RETURN(
      std::unique_ptr<ClipServer> server,
      ClipServer::Start(config, [&stop, &names](const absl::Status& loaded) {
        if (!loaded.ok()) {
          stop.Set(loaded);
          return;
        }
        std::printf("oclip serve: ready (models: %s)\n", absl::StrJoin(names, ", ").c_str());
        std::fflush(stdout);
      }));
  const std::string metrics =
      server->metrics_port() >= 0
          ? absl::StrCat("metrics on ", config.metrics_host, ":", server->metrics_port())
          : "metrics off";
  std::printf("oclip serve: listening on %s:%d (%s)\n", config.host.c_str(), server->port(),
              metrics.c_str());
  std::fflush(stdout);

  std::thread signal_thread([&stop, &signal_pipe] {
    const int signal_number = signal_pipe.Wait();
    if (signal_number == 0) return;  // Woken up after a failed load.
    stop.Set(absl::OkStatus());
    LogInfo(absl::StrCat("received ", strsignal(signal_number), ": shutting down"));
  });
  const absl::Status reason = stop.Wait();
  server->Shutdown(config.shutdown_grace);
  signal_pipe.Wake();
  signal_thread.join();
  return reason;
}

// glibc's malloc raises its mmap threshold to the largest block freed (up to
// 32 MiB), after which the server's megabyte-sized buffers (request
// messages, image bytes, batch tensors) are carved from the per-thread heap
// arenas, which keep and fragment what is freed: under `oclip bench soak`
// (64 clients, 10 minutes) RSS kept rising from ~450 to ~520 MB after
// minute 2, and stayed flat at ~315 MB with the threshold fixed at glibc's
// initial 128 KiB (which also stops the raising). An operator's
// MALLOC_MMAP_THRESHOLD_ still wins. Tensors of 1 MiB and up do not reach
// malloc's mmap path at every op: main.cc's caching CPU allocator keeps them
// for reuse (without it this threshold halved the model's throughput).
void FixMmapThreshold() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, 128 * 1024);
}

}  // namespace

int RunServe(int argc, char** argv) {
  FixMmapThreshold();
  ServeFlags values;
  FlagSet flags("serve",
                "Serves CLIP models over gRPC (oclip.v1.Clip, health, reflection) with\n"
                "dynamic batching, and Prometheus metrics over HTTP. Either --config\n"
                "server.yaml (see deploy/server.example.yaml) or --model/--pretrained for\n"
                "one model. SIGTERM/SIGINT: stop accepting, finish accepted calls, exit 0.");
  flags.AddString("config", &values.config, "server.yaml with models, limits, TLS, auth");
  flags.AddString("model", &values.model, "model config name or JSON path (one-model case)");
  flags.AddString("pretrained", &values.pretrained,
                  "checkpoint file, pretrained tag, or \"random\" (one-model case)");
  flags.AddString("tokenizer", &values.tokenizer, "tokenizer files (default: downloaded)");
  flags.AddString("name", &values.name, "the name requests use (default: --model)");
  flags.AddRepeated("device", &values.devices, "cpu, cuda or cuda:N; repeat for replicas");
  flags.AddString("precision", &values.precision,
                  "fp32 (default), fp16 (CUDA), bf16, int8 (CPU: dynamic quantization)");
  flags.AddInt("max-batch-size", &values.max_batch_size, "items per forward pass (32)");
  flags.AddString("max-queue-delay", &values.max_queue_delay,
                  "how long the oldest item waits for a fuller batch (0: run at once)");
  flags.AddInt("queue-capacity", &values.queue_capacity, "queued items before RESOURCE_EXHAUSTED");
  flags.AddInt("seed", &values.seed, "seed of --pretrained random");
  flags.AddString("templates", &values.templates, "default Classify templates, one per line");
  flags.AddRepeated("index", &values.indexes,
                    "NAME=FOLDER: serve the image index of an `oclip index build` folder for "
                    "Search (more options in server.yaml's indexes)");
  flags.AddString("host", &values.host, "address to listen on (0.0.0.0)");
  flags.AddInt("port", &values.port, "gRPC port (50051; 0 picks a free one)");
  flags.AddString("metrics-host", &values.metrics_host, "address of the metrics page (0.0.0.0)");
  flags.AddInt("metrics-port", &values.metrics_port, "metrics port (9090; 0 free; -1 off)");
  flags.AddInt("threads", &values.threads, "LibTorch threads (default: all cores)");
  flags.AddInt("preprocess-threads", &values.preprocess_threads,
               "image decode/tokenize threads (default: all cores)");
  flags.AddString("shutdown-grace", &values.shutdown_grace,
                  "how long accepted calls may finish after SIGTERM (30s)");
  flags.AddString("tls-cert", &values.tls_cert, "PEM certificate chain: serve TLS");
  flags.AddString("tls-key", &values.tls_key, "PEM private key of --tls-cert");
  flags.AddString("tls-client-ca", &values.tls_client_ca,
                  "PEM CA bundle: require and verify client certificates (mTLS)");
  flags.AddString("auth-tokens-file", &values.auth_tokens_file,
                  "file of accepted bearer tokens, one per line");
  flags.AddString("auth-tokens-env", &values.auth_tokens_env,
                  "environment variable holding accepted bearer tokens, comma-separated");
  flags.AddBool("log-json", &values.log_json, "log JSON lines");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  if (absl::Status status = Serve(values); !status.ok()) {
    std::cerr << "oclip serve: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
