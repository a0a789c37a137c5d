// `oclip bench soak`: a long-running mixed load against `oclip serve`, to
// find what short tests miss: leaks, crashes, answers that go wrong under
// concurrency, error paths that stop answering with the right code.
//
// --clients threads (64) each loop for --seconds over a weighted mix of
// valid requests (EncodeImage, EncodeText, Classify, Health, ListModels) and
// invalid ones, each with the gRPC code it must get (empty image bytes, a
// truncated JPEG, too many texts, an unknown model, Classify without labels,
// a message over limits.max_message_bytes and one over twice that, a wrong
// bearer token, Search of an unknown index; with --index also Search with an
// absurd k). Client i sends the i-th kind first, so with at least as many
// clients as kinds (15) every kind runs however short the soak.
//
// Expected answers are computed once before the load, one request at a time,
// by the same server. Under load the dynamic batcher puts an item into
// batches of other sizes and neighbours, which changes float32 summation
// order (BLAS blocking) by ~1e-6 relative, so an embedding matches when its
// cosine with the expected one is >= 0.9999 and its relative L2 error is
// <= 1e-3; the report gives the smallest relative L2 distance between the
// expected embeddings of two different inputs, which must be far above that
// for a swapped answer to be caught. Classify probabilities match within
// 1e-3 (logits are scaled by exp(logit_scale), ~100). A valid request that
// fails, or an invalid one that gets OK or another code, is a wrong answer
// too.
//
// Without --address the soak starts `oclip serve` itself on loopback (this
// binary, a server.yaml it writes with bearer-token auth on and small
// limits), samples its VmRSS every second, and stops it with SIGTERM at the
// end. With --address it targets a running server; give --server-pid for
// RSS and crash detection, --token if it requires one (then the wrong-token
// kind runs too), and its limits (--max-items, --max-message-bytes).
//
// One JSON object on stdout; exit 1 when an answer was wrong or the server
// died.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "oclip/v1/clip.grpc.pb.h"

namespace oclip::cli {
namespace {

constexpr double kMinCosine = 0.9999;
constexpr double kMaxRelativeError = 1e-3;
constexpr double kProbabilityTolerance = 1e-3;
constexpr int kMaxExamples = 20;

struct SoakFlags {
  // A running server; empty = start one.
  std::string address;
  int64_t server_pid = 0;
  std::string token;
  // The server the soak starts.
  std::string model;
  std::string pretrained = "random";
  std::string tokenizer;
  int64_t server_threads = 0;
  int64_t max_batch_size = 32;
  std::string index;
  // The load.
  std::vector<std::string> images;
  int64_t clients = 64;
  int64_t channels = 8;
  int64_t seconds = 600;
  int64_t max_items = 16;
  int64_t max_message_bytes = 1 << 20;
  int64_t seed = 1;
  std::string work_dir;
  std::string output;
};

enum Kind {
  kEncodeImage,
  kEncodeText,
  kClassify,
  kHealth,
  kListModels,
  kEmptyImage,
  kCorruptJpeg,
  kTooManyTexts,
  kUnknownModel,
  kNoLabels,
  kOversizeMessage,
  kHugeMessage,
  kWrongToken,
  kUnknownIndex,
  kAbsurdK,
  kNumKinds
};

struct KindInfo {
  const char* name;
  grpc::StatusCode expected;
  int weight;  // Out of the sum over the kinds that run.
};

// Valid requests ~80% of the mix, the model-bound ones most of it.
constexpr KindInfo kKinds[kNumKinds] = {
    {"encode_image", grpc::OK, 30},
    {"encode_text", grpc::OK, 30},
    {"classify", grpc::OK, 10},
    {"health", grpc::OK, 5},
    {"list_models", grpc::OK, 3},
    {"empty_image", grpc::INVALID_ARGUMENT, 3},
    {"corrupt_jpeg", grpc::INVALID_ARGUMENT, 3},
    {"too_many_texts", grpc::INVALID_ARGUMENT, 3},
    {"unknown_model", grpc::NOT_FOUND, 3},
    {"no_labels", grpc::INVALID_ARGUMENT, 2},
    {"oversize_message", grpc::INVALID_ARGUMENT, 1},
    {"huge_message", grpc::RESOURCE_EXHAUSTED, 1},
    {"wrong_token", grpc::UNAUTHENTICATED, 3},
    {"unknown_index", grpc::NOT_FOUND, 2},
    {"absurd_k", grpc::INVALID_ARGUMENT, 2},
};

const char* CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : "UNKNOWN_CODE";
}

// ---------------------------------------------------------------------------
// The server under test.

// VmRSS of `pid` in KiB, or -1 when it cannot be read (process gone).
int64_t ReadRssKib(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    int64_t kib = -1;
    std::string number;
    for (char c : line) {
      if (c >= '0' && c <= '9') number.push_back(c);
    }
    return absl::SimpleAtoi(number, &kib) ? kib : -1;
  }
  return -1;
}

// An `oclip serve --config` child: started, watched, stopped.
class ServerChild {
 public:
  static absl::StatusOr<std::unique_ptr<ServerChild>> Start(const std::string& config_path,
                                                            const std::string& stderr_path) {
    std::unique_ptr<ServerChild> child(new ServerChild());
    child->stderr_path_ = stderr_path;
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe failed");
    std::string binary = "/proc/self/exe";
    std::vector<std::string> args = {binary, "serve", "--config", config_path};
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return ErrnoToStatus(errno, "fork failed");
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      const int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (err >= 0) dup2(err, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    child->pid_ = pid;
    child->stdout_ = fdopen(out[0], "r");
    // "oclip serve: listening on 127.0.0.1:PORT (metrics ...)", then "ready".
    static const std::regex kListening(R"(listening on ([^ ]+) )");
    for (;;) {
      OCLIP_ASSIGN_OR_RETURN(std::string line, child->ReadLine());
      std::smatch match;
      if (std::regex_search(line, match, kListening)) child->address_ = match[1].str();
      if (absl::StrContains(line, "oclip serve: ready")) break;
    }
    if (child->address_.empty()) return absl::InternalError("oclip serve printed no address");
    return child;
  }

  ~ServerChild() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_ != nullptr) fclose(stdout_);
  }

  pid_t pid() const { return pid_; }
  const std::string& address() const { return address_; }

  // True (and the exit code in *code) once the process has exited.
  bool Exited(int* code) {
    if (pid_ <= 0) {
      *code = exit_code_;
      return true;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    *code = exit_code_;
    return true;
  }

  // SIGTERM and wait: the exit code (128 + signal when killed by one).
  int Terminate() {
    int code = 0;
    if (Exited(&code)) return code;
    kill(pid_, SIGTERM);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_;
  }

  std::string StderrTail() const {
    std::ifstream in(stderr_path_, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  }

 private:
  ServerChild() = default;

  absl::StatusOr<std::string> ReadLine() {
    char buffer[4096];
    if (std::fgets(buffer, sizeof(buffer), stdout_) == nullptr) {
      int code = 0;
      while (!Exited(&code)) usleep(10000);
      return absl::InternalError(
          absl::StrCat("oclip serve exited (", code, ") before it was ready:\n", StderrTail()));
    }
    return std::string(buffer);
  }

  pid_t pid_ = -1;
  int exit_code_ = -1;
  FILE* stdout_ = nullptr;
  std::string stderr_path_;
  std::string address_;
};

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string YamlQuote(const std::string& value) {
  std::string quoted = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') quoted.push_back('\\');
    quoted.push_back(c);
  }
  return quoted + "\"";
}

// server.yaml for the soak's own server: loopback, no metrics port, auth on,
// small limits so that the oversize kinds stay cheap.
std::string ServerYaml(const SoakFlags& flags, const std::string& tokens_file) {
  std::string yaml = absl::StrCat(
      "server:\n  host: 127.0.0.1\n  port: 0\n  metrics_port: -1\n  torch_threads: ",
      flags.server_threads, "\n  shutdown_grace: 10s\n", "models:\n  - name: soak\n    model: ",
      YamlQuote(flags.model), "\n    pretrained: ", YamlQuote(flags.pretrained), "\n");
  if (!flags.tokenizer.empty()) {
    absl::StrAppend(&yaml, "    tokenizer: ", YamlQuote(flags.tokenizer), "\n");
  }
  absl::StrAppend(&yaml, "    max_batch_size: ", flags.max_batch_size, "\n");
  if (!flags.index.empty()) {
    absl::StrAppend(&yaml, "indexes:\n  - name: soak\n    folder: ", YamlQuote(flags.index),
                    "\n");
  }
  absl::StrAppend(&yaml, "limits:\n  max_items_per_request: ", flags.max_items,
                  "\n  max_message_bytes: ", flags.max_message_bytes, "\n  max_search_k: 100\n",
                  "auth:\n  tokens_file: ", YamlQuote(tokens_file), "\n");
  return yaml;
}

// ---------------------------------------------------------------------------
// What the answers must be.

using Vector = std::vector<float>;

struct Expected {
  std::string model_name;  // The name responses carry.
  std::vector<std::string> images;  // Encoded bytes.
  std::vector<Vector> image_features;  // Unnormalized, one per image.
  std::vector<std::string> texts;
  std::vector<Vector> text_features;
  std::vector<std::vector<std::string>> label_sets;
  std::vector<std::string> templates;
  // probabilities[set][image][label index].
  std::vector<std::vector<Vector>> probabilities;
  double min_distinct_relative_error = 0;
};

double Norm(const Vector& a) {
  double sum = 0;
  for (float v : a) sum += static_cast<double>(v) * v;
  return std::sqrt(sum);
}

// "" when `got` matches `want` (see the top of the file), else why not.
std::string CompareEmbedding(const Vector& got, const Vector& want) {
  if (got.size() != want.size()) {
    return absl::StrCat(got.size(), " values, expected ", want.size());
  }
  double dot = 0, diff = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    dot += static_cast<double>(got[i]) * want[i];
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
  }
  const double want_norm = Norm(want), got_norm = Norm(got);
  const double cosine = dot / std::max(want_norm * got_norm, 1e-30);
  const double relative = std::sqrt(diff) / std::max(want_norm, 1e-30);
  if (!(cosine >= kMinCosine) || !(relative <= kMaxRelativeError)) {
    return absl::StrCat("cosine ", cosine, ", relative L2 error ", relative);
  }
  return "";
}

Vector Normalized(const Vector& a) {
  const double norm = std::max(Norm(a), 1e-12);
  Vector out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = static_cast<float>(a[i] / norm);
  return out;
}

std::vector<std::string> SoakTexts() {
  return {"a photo of a dog running on the beach",
          "a red car parked on a city street at night",
          "two people sitting at a wooden table",
          "",
          "a diagram with boxes and arrows",
          "snow on the mountain above a blue lake",
          "an old vintage poster of a family in a garden",
          "café naïve 🐕 日本語の文章",
          "a very long caption that goes on and on about the scene, the light, the colours of "
          "the sky, the people walking by, the cars, the trees, the birds, the buildings, the "
          "street signs, the shadows on the pavement and whatever else can be seen in the "
          "picture until it no longer fits in the context of the text tower"};
}

// ---------------------------------------------------------------------------
// The calls.

struct Outcome {
  grpc::StatusCode code = grpc::OK;
  std::string wrong;  // Non-empty: why the answer was wrong.
};

struct Clients {
  const SoakFlags* flags;
  const Expected* expected;
  std::string token;  // Empty: the server needs none.
  bool has_index = false;
  absl::Duration timeout = absl::Seconds(120);
  // Invalid requests built once (the large ones are megabytes).
  v1::EncodeImageRequest empty_image, corrupt_jpeg, oversize, huge;
  v1::EncodeTextRequest too_many_texts, unknown_model;
  v1::ClassifyRequest no_labels;
  v1::SearchRequest unknown_index, absurd_k;
};

std::unique_ptr<grpc::ClientContext> NewContext(const Clients& clients, bool wrong_token = false) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + clients.timeout));
  if (!clients.token.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", wrong_token ? "not-" : "", clients.token));
  }
  return context;
}

Outcome CheckEncodeResponse(const v1::EncodeResponse& response, const std::vector<int>& picks,
                            const std::vector<Vector>& features, bool normalize,
                            const std::string& model_name) {
  Outcome outcome;
  if (response.model() != model_name) {
    outcome.wrong = absl::StrCat("model '", response.model(), "', expected '", model_name, "'");
  } else if (response.embeddings_size() != static_cast<int>(picks.size())) {
    outcome.wrong =
        absl::StrCat(response.embeddings_size(), " embeddings for ", picks.size(), " inputs");
  } else if (response.dim() != static_cast<int>(features[0].size())) {
    outcome.wrong = absl::StrCat("dim ", response.dim(), ", expected ", features[0].size());
  }
  for (size_t i = 0; i < picks.size() && outcome.wrong.empty(); ++i) {
    const auto& values = response.embeddings(static_cast<int>(i)).values();
    const Vector got(values.begin(), values.end());
    const Vector& want = features[picks[i]];
    std::string why = CompareEmbedding(got, normalize ? Normalized(want) : want);
    if (!why.empty()) outcome.wrong = absl::StrCat("input ", i, " (#", picks[i], "): ", why);
  }
  return outcome;
}

Outcome CheckClassifyResponse(const v1::ClassifyResponse& response, const Expected& expected,
                              int set, const std::vector<int>& picks) {
  Outcome outcome;
  const std::vector<std::string>& labels = expected.label_sets[set];
  if (response.classifications_size() != static_cast<int>(picks.size())) {
    outcome.wrong = absl::StrCat(response.classifications_size(), " classifications for ",
                                 picks.size(), " images");
    return outcome;
  }
  for (size_t i = 0; i < picks.size(); ++i) {
    const v1::Classification& c = response.classifications(static_cast<int>(i));
    if (c.labels_size() != static_cast<int>(labels.size())) {
      outcome.wrong = absl::StrCat("image ", i, ": ", c.labels_size(), " labels, expected ",
                                   labels.size());
      return outcome;
    }
    for (const v1::LabelScore& score : c.labels()) {
      const int index = score.index();
      if (index < 0 || index >= static_cast<int>(labels.size()) ||
          score.label() != labels[index]) {
        outcome.wrong = absl::StrCat("image ", i, ": label '", score.label(), "' at index ", index);
        return outcome;
      }
      const double want = expected.probabilities[set][picks[i]][index];
      if (!(std::abs(score.probability() - want) <= kProbabilityTolerance)) {
        outcome.wrong = absl::StrCat("image ", i, " (#", picks[i], "), label ", labels[index],
                                     ": probability ", score.probability(), ", expected ", want);
        return outcome;
      }
    }
  }
  return outcome;
}

// 1 to `max_per_request` random indexes into `inputs`; an input that would
// take the request's payload over `max_bytes` is left out (a valid request
// must stay under the server's message limit), but there is always one.
std::vector<int> Picks(std::mt19937_64& rng, const std::vector<std::string>& inputs,
                       int max_per_request, int64_t max_bytes) {
  const int n = 1 + static_cast<int>(rng() % std::max(1, max_per_request));
  std::vector<int> picks;
  int64_t bytes = 0;
  for (int i = 0; i < n; ++i) {
    const int pick = static_cast<int>(rng() % inputs.size());
    const int64_t size = static_cast<int64_t>(inputs[pick].size());
    if (!picks.empty() && bytes + size > max_bytes) continue;
    picks.push_back(pick);
    bytes += size;
  }
  return picks;
}

Outcome Call(Kind kind, const Clients& clients, v1::Clip::Stub& stub,
             grpc::health::v1::Health::Stub& health, std::mt19937_64& rng) {
  const Expected& expected = *clients.expected;
  const int max_items = static_cast<int>(std::min<int64_t>(clients.flags->max_items, 4));
  // Room for the request's other fields and encoding overhead.
  const int64_t payload = clients.flags->max_message_bytes * 3 / 4;
  grpc::Status status;
  Outcome outcome;
  switch (kind) {
    case kEncodeImage: {
      v1::EncodeImageRequest request;
      const std::vector<int> picks =
          Picks(rng, expected.images, max_items, payload);
      for (int pick : picks) request.add_images()->set_data(expected.images[pick]);
      request.set_normalize(rng() % 2 == 0);
      v1::EncodeResponse response;
      status = stub.EncodeImage(NewContext(clients).get(), request, &response);
      if (status.ok()) {
        outcome = CheckEncodeResponse(response, picks, expected.image_features,
                                      request.normalize(), expected.model_name);
      }
      break;
    }
    case kEncodeText: {
      v1::EncodeTextRequest request;
      const std::vector<int> picks =
          Picks(rng, expected.texts, 2 * max_items, payload);
      for (int pick : picks) request.add_texts(expected.texts[pick]);
      request.set_normalize(rng() % 2 == 0);
      v1::EncodeResponse response;
      status = stub.EncodeText(NewContext(clients).get(), request, &response);
      if (status.ok()) {
        outcome = CheckEncodeResponse(response, picks, expected.text_features,
                                      request.normalize(), expected.model_name);
      }
      break;
    }
    case kClassify: {
      v1::ClassifyRequest request;
      const int set = static_cast<int>(rng() % expected.label_sets.size());
      const std::vector<int> picks =
          Picks(rng, expected.images, std::min(max_items, 2), payload);
      for (int pick : picks) request.add_images()->set_data(expected.images[pick]);
      for (const std::string& label : expected.label_sets[set]) request.add_labels(label);
      for (const std::string& t : expected.templates) request.add_templates(t);
      v1::ClassifyResponse response;
      status = stub.Classify(NewContext(clients).get(), request, &response);
      if (status.ok()) outcome = CheckClassifyResponse(response, expected, set, picks);
      break;
    }
    case kHealth: {
      grpc::health::v1::HealthCheckRequest request;
      grpc::health::v1::HealthCheckResponse response;
      status = health.Check(NewContext(clients).get(), request, &response);
      if (status.ok() &&
          response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
        outcome.wrong = absl::StrCat("health status ", response.status());
      }
      break;
    }
    case kListModels: {
      v1::ListModelsResponse response;
      status = stub.ListModels(NewContext(clients).get(), v1::ListModelsRequest(), &response);
      if (status.ok()) {
        const bool found = std::any_of(
            response.models().begin(), response.models().end(), [&](const v1::ModelInfo& m) {
              return m.name() == expected.model_name && m.ready() &&
                     m.embed_dim() == static_cast<int>(expected.image_features[0].size());
            });
        if (!found) outcome.wrong = "the model is not listed as ready with its dimension";
      }
      break;
    }
    case kEmptyImage:
    case kCorruptJpeg:
    case kOversizeMessage:
    case kHugeMessage:
    case kWrongToken: {
      const v1::EncodeImageRequest& request = kind == kEmptyImage        ? clients.empty_image
                                              : kind == kOversizeMessage ? clients.oversize
                                              : kind == kHugeMessage     ? clients.huge
                                                                         : clients.corrupt_jpeg;
      v1::EncodeResponse response;
      status = stub.EncodeImage(NewContext(clients, kind == kWrongToken).get(),
                                kind == kWrongToken ? clients.corrupt_jpeg : request, &response);
      break;
    }
    case kTooManyTexts:
    case kUnknownModel: {
      v1::EncodeResponse response;
      status = stub.EncodeText(NewContext(clients).get(),
                               kind == kTooManyTexts ? clients.too_many_texts
                                                     : clients.unknown_model,
                               &response);
      break;
    }
    case kNoLabels: {
      v1::ClassifyResponse response;
      status = stub.Classify(NewContext(clients).get(), clients.no_labels, &response);
      break;
    }
    case kUnknownIndex:
    case kAbsurdK: {
      v1::SearchResponse response;
      status = stub.Search(NewContext(clients).get(),
                           kind == kAbsurdK ? clients.absurd_k : clients.unknown_index, &response);
      break;
    }
    case kNumKinds:
      break;
  }
  outcome.code = status.error_code();
  if (outcome.code != kKinds[kind].expected) {
    outcome.wrong = absl::StrCat(CodeName(outcome.code), " (", status.error_message(),
                                 "), expected ", CodeName(kKinds[kind].expected));
  }
  return outcome;
}

void BuildInvalidRequests(const SoakFlags& flags, const Expected& expected, Clients* clients) {
  clients->empty_image.add_images()->set_data("");
  // A real JPEG cut in half: valid headers, then the scan ends early.
  std::string jpeg;
  for (const std::string& image : expected.images) {
    if (absl::StartsWith(image, "\xFF\xD8\xFF")) {
      jpeg = image;
      break;
    }
  }
  if (jpeg.empty()) jpeg = std::string("\xFF\xD8\xFF\xE0", 4) + std::string(4096, 'j');
  clients->corrupt_jpeg.add_images()->set_data(jpeg.substr(0, jpeg.size() / 2));
  // Over max_message_bytes: the service refuses it; over twice that, gRPC
  // itself does (the server's receive limit), with RESOURCE_EXHAUSTED.
  clients->oversize.add_images()->set_data(
      std::string(static_cast<size_t>(flags.max_message_bytes * 3 / 2), 'x'));
  clients->huge.add_images()->set_data(
      std::string(static_cast<size_t>(flags.max_message_bytes * 5 / 2), 'x'));
  for (int64_t i = 0; i <= flags.max_items; ++i) clients->too_many_texts.add_texts("a dog");
  clients->unknown_model.set_model("no-such-model-soak");
  clients->unknown_model.add_texts("a dog");
  clients->no_labels.add_images()->set_data(expected.images[0]);
  clients->unknown_index.set_index("no-such-index-soak");
  clients->unknown_index.set_text("a dog");
  clients->absurd_k.set_index("soak");
  clients->absurd_k.set_text("a dog");
  clients->absurd_k.set_k(1000000000);
}

// The expected answers, one request at a time before the load.
absl::Status ComputeExpected(const Clients& clients, v1::Clip::Stub& stub, Expected* expected) {
  auto fail = [](const char* what, const grpc::Status& status) {
    return absl::UnavailableError(absl::StrCat("expected ", what, ": ", status.error_message()));
  };
  v1::ListModelsResponse models;
  grpc::Status status = stub.ListModels(NewContext(clients).get(), {}, &models);
  if (!status.ok()) return fail("ListModels", status);
  for (const v1::ModelInfo& model : models.models()) {
    if (model.is_default()) expected->model_name = model.name();
  }
  for (const std::string& image : expected->images) {
    v1::EncodeImageRequest request;
    request.add_images()->set_data(image);
    v1::EncodeResponse response;
    status = stub.EncodeImage(NewContext(clients).get(), request, &response);
    if (!status.ok()) return fail("EncodeImage", status);
    if (response.embeddings_size() != 1) return absl::InternalError("EncodeImage: no embedding");
    const auto& values = response.embeddings(0).values();
    expected->image_features.emplace_back(values.begin(), values.end());
  }
  for (const std::string& text : expected->texts) {
    v1::EncodeTextRequest request;
    request.add_texts(text);
    v1::EncodeResponse response;
    status = stub.EncodeText(NewContext(clients).get(), request, &response);
    if (!status.ok()) return fail("EncodeText", status);
    if (response.embeddings_size() != 1) return absl::InternalError("EncodeText: no embedding");
    const auto& values = response.embeddings(0).values();
    expected->text_features.emplace_back(values.begin(), values.end());
  }
  expected->probabilities.resize(expected->label_sets.size());
  for (size_t set = 0; set < expected->label_sets.size(); ++set) {
    for (const std::string& image : expected->images) {
      v1::ClassifyRequest request;
      request.add_images()->set_data(image);
      for (const std::string& label : expected->label_sets[set]) request.add_labels(label);
      for (const std::string& t : expected->templates) request.add_templates(t);
      v1::ClassifyResponse response;
      status = stub.Classify(NewContext(clients).get(), request, &response);
      if (!status.ok()) return fail("Classify", status);
      Vector probabilities(expected->label_sets[set].size());
      if (response.classifications_size() != 1) {
        return absl::InternalError("Classify: no classification");
      }
      for (const v1::LabelScore& score : response.classifications(0).labels()) {
        if (score.index() < 0 || score.index() >= static_cast<int>(probabilities.size())) {
          return absl::InternalError("Classify: a label index out of range");
        }
        probabilities[score.index()] = score.probability();
      }
      expected->probabilities[set].push_back(std::move(probabilities));
    }
  }
  // How far apart different inputs are: a swap must be far outside tolerance.
  double closest = 1e30;
  for (const std::vector<Vector>* features :
       {&expected->image_features, &expected->text_features}) {
    const std::vector<std::string>& inputs =
        features == &expected->image_features ? expected->images : expected->texts;
    for (size_t a = 0; a < features->size(); ++a) {
      for (size_t b = a + 1; b < features->size(); ++b) {
        if (inputs[a] == inputs[b]) continue;
        double diff = 0;
        for (size_t i = 0; i < (*features)[a].size(); ++i) {
          const double d = static_cast<double>((*features)[a][i]) - (*features)[b][i];
          diff += d * d;
        }
        closest = std::min(closest, std::sqrt(diff) / std::max(Norm((*features)[b]), 1e-30));
      }
    }
  }
  expected->min_distinct_relative_error = closest;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// The run.

struct KindStats {
  int64_t requests = 0;
  int64_t wrong = 0;
  std::map<grpc::StatusCode, int64_t> codes;
};

struct ClientStats {
  KindStats kinds[kNumKinds];
  std::vector<std::string> examples;
};

struct RssSample {
  double seconds;
  int64_t kib;
};

absl::Status Soak(const SoakFlags& flags) {
  if (flags.clients < 1 || flags.channels < 1 || flags.seconds < 1) {
    return absl::InvalidArgumentError("--clients, --channels and --seconds must be >= 1");
  }
  if (flags.max_items < 1 || flags.max_message_bytes < 1024) {
    return absl::InvalidArgumentError("--max-items must be >= 1, --max-message-bytes >= 1024");
  }
  if (flags.images.empty()) return absl::InvalidArgumentError("give at least one --image");
  Expected expected;
  for (const std::string& path : flags.images) {
    OCLIP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
    if (static_cast<int64_t>(bytes.size()) > flags.max_message_bytes * 3 / 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is ", bytes.size(),
                       " bytes: too large for valid requests under --max-message-bytes ",
                       flags.max_message_bytes));
    }
    expected.images.push_back(std::move(bytes));
  }
  expected.texts = SoakTexts();
  expected.label_sets = {{"dog", "cat", "car", "diagram", "mountain"},
                         {"landscape", "portrait", "gray square", "tiny icon"},
                         {"a", "b", "c"}};
  expected.templates = {"a photo of a {}.", "a picture of a {}."};

  // The server.
  std::unique_ptr<ServerChild> child;
  std::string address = flags.address;
  pid_t pid = static_cast<pid_t>(flags.server_pid);
  Clients clients;
  clients.flags = &flags;
  clients.expected = &expected;
  clients.token = flags.token;
  clients.has_index = !flags.index.empty();
  if (address.empty()) {
    if (flags.model.empty()) {
      return absl::InvalidArgumentError("give --model (the soak starts a server) or --address");
    }
    OCLIP_ASSIGN_OR_RETURN(std::string dir, BenchWorkDir(flags.work_dir, "oclip-soak"));
    std::mt19937_64 token_rng(std::random_device{}());
    clients.token = absl::StrCat("soak-", token_rng());
    OCLIP_RETURN_IF_ERROR(WriteFile(dir + "/tokens", clients.token + "\n"));
    OCLIP_RETURN_IF_ERROR(WriteFile(dir + "/server.yaml", ServerYaml(flags, dir + "/tokens")));
    OCLIP_ASSIGN_OR_RETURN(child, ServerChild::Start(dir + "/server.yaml", dir + "/serve.stderr"));
    address = child->address();
    pid = child->pid();
    std::cerr << "oclip bench soak: server " << pid << " on " << address << " (log "
              << dir << "/serve.stderr)\n";
  }
  BuildInvalidRequests(flags, expected, &clients);

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int64_t i = 0; i < flags.channels; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(-1);
    arguments.SetMaxSendMessageSize(-1);
    // A connection per channel, not one shared subchannel.
    arguments.SetInt("grpc.use_local_subchannel_pool", 1);
    arguments.SetInt("oclip.soak_channel", static_cast<int>(i));
    channels.push_back(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments));
  }
  {
    auto stub = v1::Clip::NewStub(channels[0]);
    OCLIP_RETURN_IF_ERROR(ComputeExpected(clients, *stub, &expected));
  }

  // Which kinds run: wrong_token needs auth, absurd_k an index.
  std::vector<Kind> active, wheel;
  for (int kind = 0; kind < kNumKinds; ++kind) {
    if (kind == kWrongToken && clients.token.empty()) continue;
    if (kind == kAbsurdK && !clients.has_index) continue;
    active.push_back(static_cast<Kind>(kind));
    for (int w = 0; w < kKinds[kind].weight; ++w) wheel.push_back(static_cast<Kind>(kind));
  }

  // Server watch: RSS every second, and whether it is still alive.
  std::atomic<bool> stop{false};
  std::atomic<bool> crashed{false};
  std::vector<RssSample> rss;
  absl::Mutex rss_mu;
  const auto start = BenchClock::now();
  const auto end = start + std::chrono::seconds(flags.seconds);
  int exit_code_during_load = -1;
  auto alive = [&]() {
    if (child != nullptr) {
      int code = 0;
      if (child->Exited(&code)) {
        exit_code_during_load = code;
        return false;
      }
      return true;
    }
    // Gone, or a zombie (which has no VmRSS line).
    return pid <= 0 || ReadRssKib(pid) >= 0;
  };
  auto sample = [&]() {
    if (pid <= 0) return;
    const int64_t kib = ReadRssKib(pid);
    if (kib < 0) return;
    absl::MutexLock lock(&rss_mu);
    rss.push_back({SecondsSince(start), kib});
  };
  sample();
  std::thread watcher([&] {
    while (!stop.load()) {
      for (int i = 0; i < 10 && !stop.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (!alive()) {
        crashed = true;
        stop = true;
        return;
      }
      sample();
    }
  });

  std::vector<ClientStats> stats(flags.clients);
  auto run_client = [&](int index) {
    std::mt19937_64 rng(static_cast<uint64_t>(flags.seed) * 1000003u + index);
    auto stub = v1::Clip::NewStub(channels[index % channels.size()]);
    auto health = grpc::health::v1::Health::NewStub(channels[index % channels.size()]);
    ClientStats& mine = stats[index];
    // Client i starts with the i-th kind, so that with at least as many
    // clients as kinds every kind runs, however short the soak.
    bool first = true;
    while (!stop.load() && (first || BenchClock::now() < end)) {
      const Kind kind = first ? active[index % active.size()] : wheel[rng() % wheel.size()];
      first = false;
      const Outcome outcome = Call(kind, clients, *stub, *health, rng);
      KindStats& k = mine.kinds[kind];
      ++k.requests;
      ++k.codes[outcome.code];
      if (!outcome.wrong.empty()) {
        ++k.wrong;
        if (mine.examples.size() < kMaxExamples) {
          mine.examples.push_back(absl::StrCat(kKinds[kind].name, ": ", outcome.wrong));
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < flags.clients; ++i) threads.emplace_back(run_client, i);
  for (std::thread& thread : threads) thread.join();
  const double elapsed = SecondsSince(start);
  stop = true;
  watcher.join();
  if (!crashed && !alive()) crashed = true;
  if (!crashed) sample();

  int server_exit_code = -1;
  std::string server_log_tail;
  if (child != nullptr) {
    server_exit_code = crashed ? exit_code_during_load : child->Terminate();
    if (crashed || server_exit_code != 0) server_log_tail = child->StderrTail();
  }

  // The report.
  nlohmann::json kinds = nlohmann::json::object();
  std::map<std::string, int64_t> errors_by_code;
  std::vector<std::string> examples;
  int64_t requests = 0, wrong = 0, failed_valid = 0;
  for (int kind = 0; kind < kNumKinds; ++kind) {
    KindStats total;
    for (const ClientStats& s : stats) {
      total.requests += s.kinds[kind].requests;
      total.wrong += s.kinds[kind].wrong;
      for (const auto& [code, count] : s.kinds[kind].codes) total.codes[code] += count;
    }
    if (total.requests == 0) continue;
    nlohmann::json codes = nlohmann::json::object();
    for (const auto& [code, count] : total.codes) {
      codes[CodeName(code)] = count;
      if (code != grpc::OK) errors_by_code[CodeName(code)] += count;
      if (code != grpc::OK && kKinds[kind].expected == grpc::OK) failed_valid += count;
    }
    kinds[kKinds[kind].name] = {{"expected", CodeName(kKinds[kind].expected)},
                                {"requests", total.requests},
                                {"per_second", total.requests / elapsed},
                                {"codes", codes},
                                {"wrong", total.wrong}};
    requests += total.requests;
    wrong += total.wrong;
  }
  for (const ClientStats& s : stats) {
    for (const std::string& e : s.examples) {
      if (examples.size() < kMaxExamples) examples.push_back(e);
    }
  }
  // RSS at the load's start, 20% (minute 2 of 10), middle and end.
  auto rss_at = [&](double fraction) -> int64_t {
    int64_t best = -1;
    double best_distance = 1e30;
    for (const RssSample& s : rss) {
      const double distance = std::abs(s.seconds - fraction * elapsed);
      if (distance < best_distance) best_distance = distance, best = s.kib;
    }
    return best;
  };
  nlohmann::json rss_json = nullptr;
  if (!rss.empty()) {
    const int64_t at20 = rss_at(0.2), last = rss.back().kib;
    int64_t peak = 0;
    for (const RssSample& s : rss) peak = std::max(peak, s.kib);
    nlohmann::json series = nlohmann::json::array();
    for (int i = 0; i <= 10; ++i) series.push_back(rss_at(i / 10.0));
    rss_json = {{"start", rss.front().kib},
                {"at_20_percent", at20},
                {"middle", rss_at(0.5)},
                {"end", last},
                {"max", peak},
                {"growth_percent_20_to_end", 100.0 * (last - at20) / std::max<int64_t>(at20, 1)},
                {"every_10_percent", series}};
  }
  nlohmann::json json = {
      {"benchmark", "soak"},
      {"address", address},
      {"server_started_by_soak", child != nullptr},
      {"model", child != nullptr ? flags.model : expected.model_name},
      {"pretrained", child != nullptr ? flags.pretrained : ""},
      {"clients", flags.clients},
      {"channels", flags.channels},
      {"seconds", elapsed},
      {"requests", requests},
      {"requests_per_second", requests / elapsed},
      {"kinds", kinds},
      {"errors_by_code", errors_by_code},
      {"failed_valid_requests", failed_valid},
      {"wrong_answers", wrong},
      {"wrong_answer_examples", examples},
      {"tolerance",
       {{"min_cosine", kMinCosine},
        {"max_relative_l2_error", kMaxRelativeError},
        {"probability", kProbabilityTolerance},
        {"min_distinct_relative_l2_error", expected.min_distinct_relative_error}}},
      {"crashes", crashed ? 1 : 0},
      {"server_exit_code", server_exit_code},
      {"rss_kib", rss_json}};
  if (!server_log_tail.empty()) json["server_log_tail"] = server_log_tail;
  std::cout << json.dump() << "\n" << std::flush;
  if (!flags.output.empty()) OCLIP_RETURN_IF_ERROR(WriteFile(flags.output, json.dump(2) + "\n"));
  if (crashed) return absl::InternalError("the server died during the soak");
  if (child != nullptr && server_exit_code != 0) {
    return absl::InternalError(absl::StrCat("the server exited with ", server_exit_code));
  }
  if (wrong > 0) return absl::InternalError(absl::StrCat(wrong, " wrong answers"));
  return absl::OkStatus();
}

}  // namespace

int RunBenchSoak(int argc, char** argv) {
  SoakFlags values;
  FlagSet flags(
      "bench soak",
      "Soak test of `oclip serve`: --clients threads send a mix of valid and invalid requests\n"
      "for --seconds; prints requests/s by kind, codes, wrong answers (must be 0), crashes and\n"
      "the server's RSS (start, 20%, middle, end) as JSON. Starts the server itself unless\n"
      "--address is given.");
  flags.AddString("address", &values.address,
                  "HOST:PORT of a running server (default: start one with --model)");
  flags.AddInt("server-pid", &values.server_pid,
               "with --address: the server's pid, for RSS and crash detection");
  flags.AddString("token", &values.token, "with --address: its bearer token (enables wrong_token)");
  flags.AddString("model", &values.model, "model config name or JSON path of the started server");
  flags.AddString("pretrained", &values.pretrained, "its weights (default random)");
  flags.AddString("tokenizer", &values.tokenizer, "its tokenizer files");
  flags.AddInt("server-threads", &values.server_threads,
               "its LibTorch threads (default 0: all cores)");
  flags.AddInt("max-batch-size", &values.max_batch_size, "its max batch size (32)");
  flags.AddString("index", &values.index,
                  "an `oclip index build` folder the started server serves as 'soak' "
                  "(enables absurd_k)");
  flags.AddRepeated("image", &values.images, "image file to send (repeat; JPEG, PNG, ...)");
  flags.AddInt("clients", &values.clients, "concurrent client threads (64)");
  flags.AddInt("channels", &values.channels, "gRPC connections the clients share (8)");
  flags.AddInt("seconds", &values.seconds, "how long the load runs (600)");
  flags.AddInt("max-items", &values.max_items,
               "the server's limits.max_items_per_request (16 for the started server)");
  flags.AddInt("max-message-bytes", &values.max_message_bytes,
               "the server's limits.max_message_bytes (1 MiB for the started server)");
  flags.AddInt("seed", &values.seed, "seed of the request mix (1)");
  flags.AddString("work-dir", &values.work_dir,
                  "where the started server's config and log go (default: a new temp dir)");
  flags.AddString("output", &values.output, "also write the JSON report to this file");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  // A client that gives up on a closed connection must not kill the soak.
  signal(SIGPIPE, SIG_IGN);
  if (absl::Status status = Soak(values); !status.ok()) {
    std::cerr << "oclip bench soak: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
