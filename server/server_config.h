// The configuration of `oclip serve`: server.yaml parsed into plain structs,
// and the checks that make a bad configuration fail once, at start, with one
// clear error instead of a surprise under load.
//
// server.yaml has six top-level sections, all optional but `models`:
//
//   server:  host, port, metrics_host, metrics_port, preprocess_threads,
//            torch_threads, shutdown_grace, json_logs, default_model
//   models:  a list of maps with the ModelServingConfig keys (snake_case)
//   indexes: a list of maps with the IndexServingConfig keys
//   limits:  the LimitsConfig keys
//   tls:     cert_file, key_file, client_ca_file
//   auth:    tokens_file, tokens_env
//
// deploy/server.example.yaml documents every key. Value syntax:
//   - integers are decimal; the *_bytes limits also take a unit: "64MiB",
//     "512KiB", "1GiB" (powers of 1024) or "64MB", "512KB", "1GB" (of 1000);
//   - durations take a unit, as absl::ParseDuration reads them ("5ms", "30s",
//     "1m30s"); a bare number is refused because "5" could mean 5 ms or 5 s
//     (only "0" is accepted as it is);
//   - booleans are true/false (yes/no and on/off are accepted too);
//   - a key written with no value (`key:` or `key: ~`) means the empty string
//     for strings and an empty section for sections; for numbers, booleans and
//     durations it is an error (delete the key to get the default);
//   - file paths are used as written: a relative path is relative to the
//     server's working directory, not to the config file.
//
// Errors (absl::Status codes), each naming the source, the line and column
// when known, the key path (`models[0].max_batch_size`) and what was expected:
//   INVALID_ARGUMENT     YAML syntax errors (with yaml-cpp's line/column),
//                        unknown or duplicate keys, wrong types, numbers out of
//                        range, any ValidateServerConfig() rule below
//   NOT_FOUND            the config file, or a file the config names (TLS
//                        files, auth.tokens_file, templates_file), is missing
//   PERMISSION_DENIED    such a file exists but cannot be opened for reading
// Only the first error is reported. No exception escapes these functions.
//
// Thread safety: the functions are reentrant; the structs are plain values.
// LoadAuthTokens() reads the environment, so it must not race with setenv().

#ifndef OCLIP_SERVER_SERVER_CONFIG_H_
#define OCLIP_SERVER_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "model/precision.h"

namespace oclip {

// One served model: which weights, on which devices, batched how.
struct ModelServingConfig {
  // The name requests use to pick this model (and the `model` label of its
  // metrics). Required, unique, 1 to 128 characters of [A-Za-z0-9._-].
  std::string name;
  // OpenCLIP model config name ("ViT-B-32") or a path to a JSON model config.
  // May be empty: an OpenAI TorchScript checkpoint (.pt) carries its own
  // architecture, and loading decides whether it can do without one.
  std::string model;
  // Pretrained tag ("laion2b_s34b_b79k", "openai"), checkpoint path
  // (.safetensors, .bin, .pt), or "random" (seeded initialisation, for tests
  // and benchmarks). Default "random". Must not be empty.
  std::string pretrained = "random";
  // Optional tokenizer file or directory; empty = the model's default.
  std::string tokenizer;
  // Seed of the "random" initialisation. Default 0.
  uint64_t seed = 0;
  // The devices to run a replica of the model on, one worker each: "cpu",
  // "cuda" or "cuda:N". Only the syntax is checked here (whether the device
  // exists is for loading to say). Duplicates are refused; "cuda" counts as
  // "cuda:0". Default {"cpu"}. Must not be empty.
  std::vector<std::string> devices = {"cpu"};
  // On CUDA the weights are cast to it; on the CPU it picks the prepared
  // kernels (model/inference_precision.h). fp16 is CUDA only, int8 CPU only.
  // Default fp32.
  InferencePrecision precision = InferencePrecision::kFp32;
  // Largest batch a worker runs. Default 32, >= 1.
  int max_batch_size = 32;
  // How long the batcher waits for a batch to fill before running a partial
  // one. Default 0, as Triton's: a free worker runs whatever is queued at
  // once, and under load batches still fill with what arrived while the
  // previous one ran. Raise it to trade latency for fuller batches at
  // moderate load. >= 0.
  absl::Duration max_queue_delay = absl::ZeroDuration();
  // Items (images or texts) that may wait for this model; beyond it requests
  // get RESOURCE_EXHAUSTED. Default 1024, >= max_batch_size.
  int queue_capacity = 1024;
  // Optional file of default zero-shot prompt templates, one per line (as
  // "a photo of a {}."); empty = the server's built-in templates. Must exist
  // when set.
  std::string templates_file;
};

// One searchable index: a folder `oclip index build` wrote, served under a
// name for the Search RPC.
struct IndexServingConfig {
  // The name Search requests use. Required, unique among the indexes, 1 to
  // 128 characters of [A-Za-z0-9._-].
  std::string name;
  // The index folder (holding KIND.index and metadata.sqlite). Required; the
  // files must exist.
  std::string folder;
  // Which embeddings the index holds: "image" (default) or "text".
  std::string kind = "image";
  // The served model that encodes text and image queries; it must be the
  // model that computed the indexed embeddings. Empty = the default model.
  std::string model;
  // Overrides of the search parameters tuned at build time; 0 (default) keeps
  // them. >= 0.
  int nprobe = 0;
  int ef_search = 0;
};

// Per-request bounds: what one client may ask of the server.
struct LimitsConfig {
  // Images or texts in one request. Default 256, >= 1.
  int max_items_per_request = 256;
  // gRPC's maximum received message size. Default 64 MiB, 1 to 2^31 - 1
  // (gRPC takes an int).
  int64_t max_message_bytes = 64 << 20;
  // Encoded bytes of one image. Default 32 MiB, >= 1.
  int64_t max_image_bytes = 32 << 20;
  // Decoded pixels (width * height) of one image: the decompression-bomb
  // guard. Default 178956970 (PIL's Image.MAX_IMAGE_PIXELS), >= 1.
  int64_t max_image_pixels = 178956970;
  // UTF-8 bytes of one text. Default 8192, >= 1.
  int max_text_bytes = 8192;
  // Class labels in one Classify request. Default 1000, >= 1.
  int max_labels = 1000;
  // Prompt templates in one Classify request. Default 100, >= 1.
  int max_templates = 100;
  // Zero-shot classifiers (label set x templates x model) kept in the LRU
  // cache. Default 64, >= 0 (0: no caching).
  int classifier_cache_size = 64;
  // Hits one Search request may ask for. Default 1000, >= 1.
  int max_search_k = 1000;
  // ImageInput.uri is accepted only when it starts with one of these prefixes
  // (e.g. "file:///data/images/"); empty (the default) = uris are refused.
  // Entries must not be empty (an empty prefix would allow every uri). The
  // server must normalise a uri (no "..") before matching it.
  std::vector<std::string> allowed_uri_prefixes;
};

// TLS for the gRPC port. All empty (the default) = plaintext.
struct TlsConfig {
  // PEM certificate chain and private key of the server: both or neither.
  std::string cert_file;
  std::string key_file;
  // PEM CA bundle. Set = mutual TLS: clients must present a certificate that
  // this CA signed. Requires cert_file and key_file.
  std::string client_ca_file;
};

// Bearer-token authentication ("authorization: Bearer <token>" metadata).
// Both empty (the default) = no authentication. Both set = either source's
// tokens are accepted.
struct AuthConfig {
  // File of tokens, one per line; blank lines and lines starting with '#' are
  // skipped. Must exist when set.
  std::string tokens_file;
  // Name of an environment variable holding comma-separated tokens
  // ([A-Za-z_][A-Za-z0-9_]*). Whether it is set is checked by
  // LoadAuthTokens(), not by validation.
  std::string tokens_env;
};

struct ServerConfig {
  // Address of the gRPC port. Default "0.0.0.0" (all interfaces).
  std::string host = "0.0.0.0";
  // gRPC port. Default 50051; 0 = pick a free port; 0 to 65535.
  int port = 50051;
  // Address of the Prometheus /metrics HTTP endpoint. Default "0.0.0.0".
  std::string metrics_host = "0.0.0.0";
  // Default 9090; 0 = pick a free port; -1 = no metrics endpoint. -1 to
  // 65535, and not equal to `port` unless both are 0.
  int metrics_port = 9090;
  // Threads decoding and preprocessing images. Default 0 = hardware
  // concurrency; >= 0.
  int preprocess_threads = 0;
  // LibTorch intra-op threads. Default 0 = hardware concurrency; >= 0.
  int torch_threads = 0;
  // How long shutdown waits for in-flight requests before cancelling them.
  // Default 30 s; finite, >= 0.
  absl::Duration shutdown_grace = absl::Seconds(30);
  // Log one JSON object per line instead of text. Default false.
  bool json_logs = false;
  // The model used by requests that name none; empty (the default) = the
  // first of `models`. Must be one of the models' names when set.
  std::string default_model;
  // The served models; at least one.
  std::vector<ModelServingConfig> models;
  // Indexes for the Search RPC; none by default.
  std::vector<IndexServingConfig> indexes;
  LimitsConfig limits;
  TlsConfig tls;
  AuthConfig auth;
};

// Parses and validates (ValidateServerConfig()) server.yaml's text.
// `source_name` (usually the file's path) starts every error message.
absl::StatusOr<ServerConfig> ParseServerConfig(absl::string_view yaml_text,
                                               absl::string_view source_name);

// Reads, parses and validates the file at `path`. NOT_FOUND if it is missing,
// INVALID_ARGUMENT if it is not a regular file.
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);

// The rules a config must follow, whichever way it was built (server.yaml or
// command-line flags): the ranges documented on each field, unique valid model
// names, default_model among them, tls with both cert and key, and the files
// the config names existing and readable, every index's model among the
// models. Errors name the key path
// ("models[1].devices[0]: ...").
absl::Status ValidateServerConfig(const ServerConfig& config);

// The bearer tokens the server accepts: the union (first occurrence first,
// duplicates dropped) of the tokens in auth.tokens_file and in the
// environment variable auth.tokens_env. Surrounding whitespace is trimmed.
// Empty only when neither source is configured (authentication off).
//   NOT_FOUND            the file is missing, or the variable is not set
//   PERMISSION_DENIED    the file cannot be opened
//   FAILED_PRECONDITION  a configured source holds no token
//   INVALID_ARGUMENT     a token contains whitespace or control characters,
//                        or tokens_env is not a valid variable name
// Error messages never contain a token (the file line number says where).
absl::StatusOr<std::vector<std::string>> LoadAuthTokens(const AuthConfig& auth);

}  // namespace oclip

#endif  // OCLIP_SERVER_SERVER_CONFIG_H_
