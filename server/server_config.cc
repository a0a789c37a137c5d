#include "server/server_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

// A failed rule, kept apart from its Status so that ParseServerConfig() can
// add the file, line and column where `path` was written.
struct ConfigError {
  absl::StatusCode code;
  std::string path;
  std::string message;
};

using MaybeError = std::optional<ConfigError>;

#define OCLIP_CONFIG_CHECK_(expr)           \
  do {                                      \
    if (MaybeError oclip_error_ = (expr)) { \
      return oclip_error_;                  \
    }                                       \
  } while (false)

ConfigError Invalid(std::string path, std::string message) {
  return {absl::StatusCode::kInvalidArgument, std::move(path), std::move(message)};
}

std::string JoinPath(absl::string_view parent, absl::string_view key) {
  return parent.empty() ? std::string(key) : absl::StrCat(parent, ".", key);
}

std::string IndexPath(absl::string_view parent, size_t index) {
  return absl::StrCat(parent, "[", index, "]");
}

// Checks that `file` can be opened for reading and is a regular file, so that
// a typo in a path fails at start rather than at the first TLS handshake or
// model load.
absl::Status CheckReadableFile(const std::string& file) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("cannot open '", file, "'"));
  struct stat st;
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const int err = errno;
  ::close(fd);
  if (!stat_ok) {
    return absl::InternalError(absl::StrCat("cannot stat '", file, "': ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("'", file, "' is not a regular file"));
  }
  return absl::OkStatus();
}

MaybeError CheckFileAt(const std::string& path, const std::string& file) {
  absl::Status status = CheckReadableFile(file);
  if (status.ok()) return std::nullopt;
  return ConfigError{status.code(), path, std::string(status.message())};
}

// ------------------------------------------------------------------ rules --

bool IsModelNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

constexpr size_t kMaxModelNameLength = 128;

// "cpu" or "cuda:N"; nullopt when `device` is not one of the accepted forms.
// "cuda" is LibTorch's current device, which is cuda:0 in a server that
// never changes it, so both spellings name the same device.
std::optional<std::string> CanonicalDevice(absl::string_view device) {
  if (device == "cpu") return std::string(device);
  if (device == "cuda") return std::string("cuda:0");
  if (!absl::ConsumePrefix(&device, "cuda:") || device.empty() || device.size() > 4) {
    return std::nullopt;
  }
  int index = 0;
  for (char c : device) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    index = index * 10 + (c - '0');
  }
  return absl::StrCat("cuda:", index);
}

bool IsValidEnvName(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

MaybeError CheckAtLeast(const std::string& path, int64_t value, int64_t min) {
  if (value >= min) return std::nullopt;
  return Invalid(path, absl::StrCat("must be >= ", min, ", got ", value));
}

MaybeError CheckBetween(const std::string& path, int64_t value, int64_t min, int64_t max) {
  if (value >= min && value <= max) return std::nullopt;
  return Invalid(path, absl::StrCat("must be between ", min, " and ", max, ", got ", value));
}

MaybeError CheckDuration(const std::string& path, absl::Duration value) {
  if (value >= absl::ZeroDuration() && value != absl::InfiniteDuration()) return std::nullopt;
  return Invalid(path,
                 absl::StrCat("must be a finite duration >= 0, got ", absl::FormatDuration(value)));
}

MaybeError CheckHost(const std::string& path, const std::string& host) {
  if (host.empty()) return Invalid(path, "must not be empty (use 0.0.0.0 for all interfaces)");
  if (std::any_of(host.begin(), host.end(),
                  [](char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); })) {
    return Invalid(path, absl::StrCat("'", host, "' contains whitespace"));
  }
  return std::nullopt;
}

MaybeError ValidateName(const std::string& name, const std::string& path,
                        absl::string_view what_for) {
  if (name.empty()) return Invalid(path, absl::StrCat("is required: the name ", what_for));
  if (name.size() > kMaxModelNameLength ||
      !std::all_of(name.begin(), name.end(), IsModelNameChar)) {
    return Invalid(path, absl::StrCat("'", name, "' must be 1 to ", kMaxModelNameLength,
                                      " characters of [A-Za-z0-9._-]"));
  }
  return std::nullopt;
}

MaybeError ValidateModel(const ModelServingConfig& model, const std::string& path) {
  OCLIP_CONFIG_CHECK_(
      ValidateName(model.name, JoinPath(path, "name"), "requests use to pick this model"));
  if (model.pretrained.empty()) {
    return Invalid(JoinPath(path, "pretrained"),
                   "must not be empty: a pretrained tag, a checkpoint path, or 'random'");
  }
  const std::string devices_path = JoinPath(path, "devices");
  if (model.devices.empty()) {
    return Invalid(devices_path, "must list at least one device (cpu, cuda or cuda:N)");
  }
  std::map<std::string, size_t> seen_devices;
  for (size_t i = 0; i < model.devices.size(); ++i) {
    const std::string device_path = IndexPath(devices_path, i);
    std::optional<std::string> device = CanonicalDevice(model.devices[i]);
    if (!device) {
      return Invalid(device_path, absl::StrCat("'", model.devices[i],
                                               "' is not a device; expected cpu, cuda or cuda:N"));
    }
    auto [it, inserted] = seen_devices.emplace(*device, i);
    if (!inserted) {
      return Invalid(device_path, absl::StrCat("'", model.devices[i], "' is the same device as ",
                                               IndexPath(devices_path, it->second), " ('",
                                               model.devices[it->second], "')"));
    }
  }
  OCLIP_CONFIG_CHECK_(CheckAtLeast(JoinPath(path, "max_batch_size"), model.max_batch_size, 1));
  OCLIP_CONFIG_CHECK_(CheckDuration(JoinPath(path, "max_queue_delay"), model.max_queue_delay));
  if (model.queue_capacity < model.max_batch_size) {
    return Invalid(JoinPath(path, "queue_capacity"),
                   absl::StrCat("must be >= max_batch_size (", model.max_batch_size, "), got ",
                                model.queue_capacity));
  }
  if (!model.templates_file.empty()) {
    OCLIP_CONFIG_CHECK_(CheckFileAt(JoinPath(path, "templates_file"), model.templates_file));
  }
  return std::nullopt;
}

MaybeError ValidateIndex(const IndexServingConfig& index, const std::string& path,
                         const std::map<std::string, size_t>& model_names) {
  OCLIP_CONFIG_CHECK_(
      ValidateName(index.name, JoinPath(path, "name"), "Search requests use to pick this index"));
  if (index.kind != "image" && index.kind != "text") {
    return Invalid(JoinPath(path, "kind"),
                   absl::StrCat("'", index.kind, "' is not one of image, text"));
  }
  if (index.folder.empty()) {
    return Invalid(JoinPath(path, "folder"),
                   "is required: the folder `oclip index build` wrote");
  }
  OCLIP_CONFIG_CHECK_(CheckFileAt(JoinPath(path, "folder"),
                                  absl::StrCat(index.folder, "/", index.kind, ".index")));
  OCLIP_CONFIG_CHECK_(
      CheckFileAt(JoinPath(path, "folder"), absl::StrCat(index.folder, "/metadata.sqlite")));
  if (!index.model.empty() && model_names.count(index.model) == 0) {
    std::vector<std::string> known;
    for (const auto& [name, position] : model_names) known.push_back(name);
    return Invalid(JoinPath(path, "model"),
                   absl::StrCat("'", index.model, "' is not one of the models (",
                                absl::StrJoin(known, ", "), ")"));
  }
  OCLIP_CONFIG_CHECK_(CheckAtLeast(JoinPath(path, "nprobe"), index.nprobe, 0));
  OCLIP_CONFIG_CHECK_(CheckAtLeast(JoinPath(path, "ef_search"), index.ef_search, 0));
  return std::nullopt;
}

MaybeError ValidateLimits(const LimitsConfig& limits) {
  OCLIP_CONFIG_CHECK_(
      CheckAtLeast("limits.max_items_per_request", limits.max_items_per_request, 1));
  // gRPC's SetMaxReceiveMessageSize() takes an int.
  OCLIP_CONFIG_CHECK_(CheckBetween("limits.max_message_bytes", limits.max_message_bytes, 1,
                                   std::numeric_limits<int32_t>::max()));
  OCLIP_CONFIG_CHECK_(CheckAtLeast("limits.max_image_bytes", limits.max_image_bytes, 1));
  OCLIP_CONFIG_CHECK_(CheckAtLeast("limits.max_image_pixels", limits.max_image_pixels, 1));
  OCLIP_CONFIG_CHECK_(CheckAtLeast("limits.max_text_bytes", limits.max_text_bytes, 1));
  OCLIP_CONFIG_CHECK_(CheckAtLeast("limits.max_labels", limits.max_labels, 1));
  OCLIP_CONFIG_CHECK_(CheckAtLeast("limits.max_templates", limits.max_templates, 1));
  OCLIP_CONFIG_CHECK_(
      CheckAtLeast("limits.classifier_cache_size", limits.classifier_cache_size, 0));
  OCLIP_CONFIG_CHECK_(CheckAtLeast("limits.max_search_k", limits.max_search_k, 1));
  for (size_t i = 0; i < limits.allowed_uri_prefixes.size(); ++i) {
    if (limits.allowed_uri_prefixes[i].empty()) {
      return Invalid(IndexPath("limits.allowed_uri_prefixes", i),
                     "must not be empty (an empty prefix would accept every uri)");
    }
  }
  return std::nullopt;
}

MaybeError ValidateTls(const TlsConfig& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return Invalid(tls.cert_file.empty() ? "tls.cert_file" : "tls.key_file",
                   "tls needs both cert_file and key_file, or neither");
  }
  if (!tls.client_ca_file.empty() && tls.cert_file.empty()) {
    return Invalid("tls.client_ca_file",
                   "client certificates (mutual TLS) need the server's cert_file and key_file");
  }
  if (!tls.cert_file.empty()) {
    OCLIP_CONFIG_CHECK_(CheckFileAt("tls.cert_file", tls.cert_file));
    OCLIP_CONFIG_CHECK_(CheckFileAt("tls.key_file", tls.key_file));
  }
  if (!tls.client_ca_file.empty()) {
    OCLIP_CONFIG_CHECK_(CheckFileAt("tls.client_ca_file", tls.client_ca_file));
  }
  return std::nullopt;
}

MaybeError ValidateAuth(const AuthConfig& auth) {
  if (!auth.tokens_file.empty())
    OCLIP_CONFIG_CHECK_(CheckFileAt("auth.tokens_file", auth.tokens_file));
  if (!auth.tokens_env.empty() && !IsValidEnvName(auth.tokens_env)) {
    return Invalid("auth.tokens_env",
                   absl::StrCat("'", auth.tokens_env,
                                "' is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"));
  }
  return std::nullopt;
}

MaybeError Validate(const ServerConfig& config) {
  OCLIP_CONFIG_CHECK_(CheckHost("server.host", config.host));
  OCLIP_CONFIG_CHECK_(CheckBetween("server.port", config.port, 0, 65535));
  OCLIP_CONFIG_CHECK_(CheckBetween("server.metrics_port", config.metrics_port, -1, 65535));
  if (config.metrics_port != -1) {
    OCLIP_CONFIG_CHECK_(CheckHost("server.metrics_host", config.metrics_host));
  }
  if (config.metrics_port > 0 && config.metrics_port == config.port) {
    return Invalid("server.metrics_port",
                   absl::StrCat("must differ from server.port (both are ", config.port,
                                "); -1 turns the metrics endpoint off"));
  }
  OCLIP_CONFIG_CHECK_(CheckAtLeast("server.preprocess_threads", config.preprocess_threads, 0));
  OCLIP_CONFIG_CHECK_(CheckAtLeast("server.torch_threads", config.torch_threads, 0));
  OCLIP_CONFIG_CHECK_(CheckDuration("server.shutdown_grace", config.shutdown_grace));

  if (config.models.empty()) {
    return Invalid("models", "at least one model is required");
  }
  std::map<std::string, size_t> names;
  for (size_t i = 0; i < config.models.size(); ++i) {
    const std::string path = IndexPath("models", i);
    OCLIP_CONFIG_CHECK_(ValidateModel(config.models[i], path));
    auto [it, inserted] = names.emplace(config.models[i].name, i);
    if (!inserted) {
      return Invalid(JoinPath(path, "name"),
                     absl::StrCat("duplicate model name '", config.models[i].name, "' (also ",
                                  IndexPath("models", it->second), ".name)"));
    }
  }
  if (!config.default_model.empty() && names.count(config.default_model) == 0) {
    std::vector<std::string> known;
    for (const auto& model : config.models) known.push_back(model.name);
    return Invalid("server.default_model",
                   absl::StrCat("'", config.default_model, "' is not one of the models (",
                                absl::StrJoin(known, ", "), ")"));
  }
  std::map<std::string, size_t> index_names;
  for (size_t i = 0; i < config.indexes.size(); ++i) {
    const std::string path = IndexPath("indexes", i);
    OCLIP_CONFIG_CHECK_(ValidateIndex(config.indexes[i], path, names));
    auto [it, inserted] = index_names.emplace(config.indexes[i].name, i);
    if (!inserted) {
      return Invalid(JoinPath(path, "name"),
                     absl::StrCat("duplicate index name '", config.indexes[i].name, "' (also ",
                                  IndexPath("indexes", it->second), ".name)"));
    }
  }
  OCLIP_CONFIG_CHECK_(ValidateLimits(config.limits));
  OCLIP_CONFIG_CHECK_(ValidateTls(config.tls));
  OCLIP_CONFIG_CHECK_(ValidateAuth(config.auth));
  return std::nullopt;
}

// ---------------------------------------------------------------- parsing --

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      const bool same = absl::ascii_tolower(a[i - 1]) == absl::ascii_tolower(b[j - 1]);
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (same ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The known key a misspelt `key` most likely meant, or "" when none is close:
// a small edit distance, or one being a prefix of the other (max_batch for
// max_batch_size, max_queue_delay_ms for max_queue_delay).
std::string ClosestKey(absl::string_view key, const std::vector<absl::string_view>& known) {
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (absl::string_view candidate : known) {
    const size_t distance = EditDistance(key, candidate);
    const bool prefix = std::min(key.size(), candidate.size()) >= 4 &&
                        (absl::StartsWith(candidate, key) || absl::StartsWith(key, candidate));
    if ((distance <= 2 || prefix) && distance < best_distance) {
      best = std::string(candidate);
      best_distance = distance;
    }
  }
  return best;
}

// How a node looks, for "expected X, got Y" messages.
std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "no value";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar: {
      constexpr size_t kMaxShown = 60;
      const std::string& text = node.Scalar();
      if (text.size() <= kMaxShown) return absl::StrCat("'", text, "'");
      return absl::StrCat("'", text.substr(0, kMaxShown), "...'");
    }
    default:
      return "nothing";
  }
}

// Walks the YAML tree into the structs. Remembers where each key path was
// written so that errors found later, by validation, can point at the line.
class ConfigReader {
 public:
  using FieldReader = std::function<absl::Status(const YAML::Node& value, const std::string& path)>;
  struct Field {
    absl::string_view key;
    FieldReader read;
  };

  explicit ConfigReader(absl::string_view source) : source_(source) {}

  absl::Status Error(const YAML::Mark& mark, absl::string_view path,
                     absl::string_view message) const {
    return absl::InvalidArgumentError(Format(mark, path, message));
  }

  // As above, at `node`; a node with no value has no useful position of its
  // own (yaml-cpp gives the next token's), so its key's is used.
  absl::Status ErrorAt(const YAML::Node& node, absl::string_view path,
                       absl::string_view message) const {
    return Error(node.IsNull() ? MarkOf(std::string(path)) : node.Mark(), path, message);
  }

  absl::Status Error(const ConfigError& error) const {
    return absl::Status(error.code, Format(MarkOf(error.path), error.path, error.message));
  }

  std::string Format(const YAML::Mark& mark, absl::string_view path,
                     absl::string_view message) const {
    std::string where = source_;
    if (!mark.is_null()) absl::StrAppend(&where, ":", mark.line + 1, ":", mark.column + 1);
    if (path.empty()) return absl::StrCat(where, ": ", message);
    return absl::StrCat(where, ": ", path, ": ", message);
  }

  // Reads a map whose keys must all be among `fields`. No value (`section:`)
  // reads as an empty map.
  absl::Status ReadMap(const YAML::Node& node, const std::string& path,
                       const std::vector<Field>& fields) {
    std::vector<absl::string_view> keys;
    for (const Field& field : fields) keys.push_back(field.key);
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return ErrorAt(node, path,
                     absl::StrCat("expected a map with keys ", absl::StrJoin(keys, ", "), ", got ",
                                  Describe(node)));
    }
    std::set<std::string> seen;
    for (const auto& entry : node) {
      const YAML::Node& key_node = entry.first;
      const YAML::Node& value = entry.second;
      if (!key_node.IsScalar()) {
        return Error(key_node.Mark(), path,
                     absl::StrCat("keys must be plain names, got ", Describe(key_node)));
      }
      const std::string& key = key_node.Scalar();
      const std::string key_path = JoinPath(path, key);
      auto field =
          std::find_if(fields.begin(), fields.end(), [&](const Field& f) { return f.key == key; });
      if (field == fields.end()) {
        const std::string closest = ClosestKey(key, keys);
        return Error(key_node.Mark(), key_path,
                     closest.empty()
                         ? absl::StrCat("unknown key; expected one of ", absl::StrJoin(keys, ", "))
                         : absl::StrCat("unknown key (did you mean ", closest, "?)"));
      }
      if (!seen.insert(key).second) {
        return Error(key_node.Mark(), key_path, "duplicate key");
      }
      // An empty value's mark is where the next token starts (often the next
      // line); the key is where the reader will look.
      Remember(key_path, value.IsNull() ? key_node.Mark() : value.Mark());
      OCLIP_RETURN_IF_ERROR(field->read(value, key_path));
    }
    return absl::OkStatus();
  }

  FieldReader Map(std::vector<Field> fields) {
    return [this, fields = std::move(fields)](const YAML::Node& node, const std::string& path) {
      return ReadMap(node, path, fields);
    };
  }

  FieldReader String(std::string* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      if (node.IsNull()) {
        out->clear();
        return absl::OkStatus();
      }
      if (!node.IsScalar()) {
        return ErrorAt(node, path, absl::StrCat("expected a string, got ", Describe(node)));
      }
      *out = node.Scalar();
      return absl::OkStatus();
    };
  }

  FieldReader StringList(std::vector<std::string>* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      out->clear();
      if (node.IsNull()) return absl::OkStatus();
      if (!node.IsSequence()) {
        return ErrorAt(
            node, path,
            absl::StrCat("expected a list of strings (e.g. [a, b]), got ", Describe(node)));
      }
      for (size_t i = 0; i < node.size(); ++i) {
        const YAML::Node item = node[i];
        const std::string item_path = IndexPath(path, i);
        if (!item.IsScalar()) {
          return ErrorAt(item, item_path, absl::StrCat("expected a string, got ", Describe(item)));
        }
        Remember(item_path, item.Mark());
        out->push_back(item.Scalar());
      }
      return absl::OkStatus();
    };
  }

  FieldReader Int(int* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      int64_t value = 0;
      OCLIP_RETURN_IF_ERROR(ReadInteger(node, path, /*allow_units=*/false, &value));
      OCLIP_RETURN_IF_ERROR(CheckIntRange(node, path, value));
      *out = static_cast<int>(value);
      return absl::OkStatus();
    };
  }

  FieldReader Int64(int64_t* out) {
    return [this, out](const YAML::Node& node, const std::string& path) {
      return ReadInteger(node, path, /*allow_units=*/false, out);
    };
  }

  FieldReader Bytes(int64_t* out) {
    return [this, out](const YAML::Node& node, const std::string& path) {
      return ReadInteger(node, path, /*allow_units=*/true, out);
    };
  }

  FieldReader IntBytes(int* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      int64_t value = 0;
      OCLIP_RETURN_IF_ERROR(ReadInteger(node, path, /*allow_units=*/true, &value));
      OCLIP_RETURN_IF_ERROR(CheckIntRange(node, path, value));
      *out = static_cast<int>(value);
      return absl::OkStatus();
    };
  }

  FieldReader Uint64(uint64_t* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      std::string text;
      OCLIP_RETURN_IF_ERROR(ScalarText(node, path, "a non-negative integer", &text));
      if (!absl::SimpleAtoi(text, out) || absl::StartsWith(text, "-")) {
        return ErrorAt(
            node, path,
            absl::StrCat("expected a non-negative integer below 2^64, got ", Describe(node)));
      }
      return absl::OkStatus();
    };
  }

  FieldReader Bool(bool* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      std::string text;
      OCLIP_RETURN_IF_ERROR(ScalarText(node, path, "true or false", &text));
      const std::string lower = absl::AsciiStrToLower(text);
      if (lower == "true" || lower == "yes" || lower == "on") {
        *out = true;
      } else if (lower == "false" || lower == "no" || lower == "off") {
        *out = false;
      } else {
        return ErrorAt(node, path, absl::StrCat("expected true or false, got ", Describe(node)));
      }
      return absl::OkStatus();
    };
  }

  FieldReader Duration(absl::Duration* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      std::string text;
      OCLIP_RETURN_IF_ERROR(ScalarText(node, path, "a duration such as 5ms or 30s", &text));
      if (text == "0") {
        *out = absl::ZeroDuration();
        return absl::OkStatus();
      }
      // A bare number ("5", "2.5"), as opposed to words ParseDuration also
      // takes ("inf") or nonsense, gets the hint about units.
      const bool bare_number =
          std::any_of(text.begin(), text.end(),
                      [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); }) &&
          std::all_of(text.begin(), text.end(), [](char c) {
            return absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.' || c == '-' ||
                   c == '+';
          });
      if (bare_number) {
        return ErrorAt(
            node, path,
            absl::StrCat("'", text, "' needs a unit: write e.g. '", text, "ms' or '", text, "s'"));
      }
      if (!absl::ParseDuration(text, out)) {
        return ErrorAt(node, path,
                       absl::StrCat("expected a duration with a unit (e.g. 5ms, 30s, 1m30s), got ",
                                    Describe(node)));
      }
      return absl::OkStatus();
    };
  }

  FieldReader PrecisionField(InferencePrecision* out) {
    return [this, out](const YAML::Node& node, const std::string& path) -> absl::Status {
      std::string text;
      OCLIP_RETURN_IF_ERROR(ScalarText(node, path, "fp32, fp16, bf16 or int8", &text));
      absl::StatusOr<InferencePrecision> precision = ParseInferencePrecision(text);
      if (!precision.ok()) return ErrorAt(node, path, precision.status().message());
      *out = *precision;
      return absl::OkStatus();
    };
  }

  // A list of maps, each read into a T with the fields `fields_of` gives.
  // `expected` describes an item for the error on anything but a list.
  template <typename T, typename FieldsOf>
  FieldReader ListOfMaps(std::vector<T>* out, absl::string_view expected, FieldsOf fields_of) {
    return [this, out, expected, fields_of](const YAML::Node& node,
                                            const std::string& path) -> absl::Status {
      out->clear();
      if (node.IsNull()) return absl::OkStatus();
      if (!node.IsSequence()) {
        return ErrorAt(node, path,
                       absl::StrCat("expected a list of ", expected, ", got ", Describe(node)));
      }
      for (size_t i = 0; i < node.size(); ++i) {
        const YAML::Node item = node[i];
        const std::string item_path = IndexPath(path, i);
        Remember(item_path, item.Mark());
        T value;
        OCLIP_RETURN_IF_ERROR(ReadMap(item, item_path, fields_of(&value)));
        out->push_back(std::move(value));
      }
      return absl::OkStatus();
    };
  }

  FieldReader Models(std::vector<ModelServingConfig>* out) {
    return ListOfMaps(out, "models (maps with at least a name)",
                      [this](ModelServingConfig* model) { return ModelFields(model); });
  }

  FieldReader Indexes(std::vector<IndexServingConfig>* out) {
    return ListOfMaps(out, "indexes (maps with a name and a folder)",
                      [this](IndexServingConfig* index) -> std::vector<Field> {
                        return {
                            {"name", String(&index->name)},
                            {"folder", String(&index->folder)},
                            {"kind", String(&index->kind)},
                            {"model", String(&index->model)},
                            {"nprobe", Int(&index->nprobe)},
                            {"ef_search", Int(&index->ef_search)},
                        };
                      });
  }

  std::vector<Field> ModelFields(ModelServingConfig* m) {
    return {
        {"name", String(&m->name)},
        {"model", String(&m->model)},
        {"pretrained", String(&m->pretrained)},
        {"tokenizer", String(&m->tokenizer)},
        {"seed", Uint64(&m->seed)},
        {"devices", StringList(&m->devices)},
        {"precision", PrecisionField(&m->precision)},
        {"max_batch_size", Int(&m->max_batch_size)},
        {"max_queue_delay", Duration(&m->max_queue_delay)},
        {"queue_capacity", Int(&m->queue_capacity)},
        {"templates_file", String(&m->templates_file)},
    };
  }

  std::vector<Field> TopLevelFields(ServerConfig* c) {
    LimitsConfig* l = &c->limits;
    return {
        {"server", Map({
                       {"host", String(&c->host)},
                       {"port", Int(&c->port)},
                       {"metrics_host", String(&c->metrics_host)},
                       {"metrics_port", Int(&c->metrics_port)},
                       {"preprocess_threads", Int(&c->preprocess_threads)},
                       {"torch_threads", Int(&c->torch_threads)},
                       {"shutdown_grace", Duration(&c->shutdown_grace)},
                       {"json_logs", Bool(&c->json_logs)},
                       {"default_model", String(&c->default_model)},
                   })},
        {"models", Models(&c->models)},
        {"indexes", Indexes(&c->indexes)},
        {"limits", Map({
                       {"max_items_per_request", Int(&l->max_items_per_request)},
                       {"max_message_bytes", Bytes(&l->max_message_bytes)},
                       {"max_image_bytes", Bytes(&l->max_image_bytes)},
                       {"max_image_pixels", Int64(&l->max_image_pixels)},
                       {"max_text_bytes", IntBytes(&l->max_text_bytes)},
                       {"max_labels", Int(&l->max_labels)},
                       {"max_templates", Int(&l->max_templates)},
                       {"classifier_cache_size", Int(&l->classifier_cache_size)},
                       {"max_search_k", Int(&l->max_search_k)},
                       {"allowed_uri_prefixes", StringList(&l->allowed_uri_prefixes)},
                   })},
        {"tls", Map({
                    {"cert_file", String(&c->tls.cert_file)},
                    {"key_file", String(&c->tls.key_file)},
                    {"client_ca_file", String(&c->tls.client_ca_file)},
                })},
        {"auth", Map({
                     {"tokens_file", String(&c->auth.tokens_file)},
                     {"tokens_env", String(&c->auth.tokens_env)},
                 })},
    };
  }

 private:
  void Remember(const std::string& path, const YAML::Mark& mark) { marks_[path] = mark; }

  // Where `path`, or failing that its nearest written ancestor, was written:
  // a rule on a defaulted key (queue_capacity < a written max_batch_size)
  // points at the model it belongs to.
  YAML::Mark MarkOf(std::string path) const {
    while (!path.empty()) {
      auto it = marks_.find(path);
      if (it != marks_.end()) return it->second;
      const size_t cut = path.find_last_of(".[");
      path.resize(cut == std::string::npos ? 0 : cut);
    }
    return YAML::Mark::null_mark();
  }

  absl::Status ScalarText(const YAML::Node& node, const std::string& path,
                          absl::string_view expected, std::string* text) const {
    if (node.IsNull()) {
      return ErrorAt(node, path,
                     absl::StrCat("expected ", expected,
                                  ", got no value (delete the key to use the default)"));
    }
    if (!node.IsScalar()) {
      return ErrorAt(node, path, absl::StrCat("expected ", expected, ", got ", Describe(node)));
    }
    *text = node.Scalar();
    return absl::OkStatus();
  }

  // A decimal integer; with `allow_units`, optionally followed by a byte unit.
  absl::Status ReadInteger(const YAML::Node& node, const std::string& path, bool allow_units,
                           int64_t* out) const {
    const absl::string_view expected =
        allow_units ? "an integer number of bytes, optionally with a unit (64MiB, 512KB)"
                    : "an integer";
    std::string text;
    OCLIP_RETURN_IF_ERROR(ScalarText(node, path, expected, &text));
    absl::string_view number = absl::StripAsciiWhitespace(text);
    int64_t multiplier = 1;
    if (allow_units) {
      static const std::pair<absl::string_view, int64_t> kUnits[] = {
          {"KiB", int64_t{1} << 10},
          {"MiB", int64_t{1} << 20},
          {"GiB", int64_t{1} << 30},
          {"KB", 1000},
          {"MB", 1000 * 1000},
          {"GB", 1000 * 1000 * 1000},
          {"B", 1},
      };
      for (const auto& [unit, factor] : kUnits) {
        if (absl::ConsumeSuffix(&number, unit)) {
          number = absl::StripTrailingAsciiWhitespace(number);
          multiplier = factor;
          break;
        }
      }
    }
    int64_t value = 0;
    if (!absl::SimpleAtoi(number, &value)) {
      return ErrorAt(node, path, absl::StrCat("expected ", expected, ", got ", Describe(node)));
    }
    if (value > std::numeric_limits<int64_t>::max() / multiplier ||
        value < std::numeric_limits<int64_t>::min() / multiplier) {
      return ErrorAt(node, path, absl::StrCat(Describe(node), " is too large"));
    }
    *out = value * multiplier;
    return absl::OkStatus();
  }

  absl::Status CheckIntRange(const YAML::Node& node, const std::string& path, int64_t value) const {
    if (value >= std::numeric_limits<int>::min() && value <= std::numeric_limits<int>::max()) {
      return absl::OkStatus();
    }
    return ErrorAt(
        node, path,
        absl::StrCat(Describe(node), " is out of range; expected a number between ",
                     std::numeric_limits<int>::min(), " and ", std::numeric_limits<int>::max()));
  }

  std::string source_;
  std::map<std::string, YAML::Mark> marks_;
};

absl::StatusOr<ServerConfig> ParseTree(absl::string_view yaml_text, ConfigReader& reader) {
  const std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml_text));
  if (documents.empty() || (documents.size() == 1 && documents[0].IsNull())) {
    return reader.Error(YAML::Mark::null_mark(), "",
                        "the config is empty; expected a map with at least a 'models' list");
  }
  if (documents.size() > 1) {
    return reader.Error(documents[1].Mark(), "",
                        absl::StrCat("holds ", documents.size(),
                                     " YAML documents ('---' separators); expected one"));
  }
  ServerConfig config;
  OCLIP_RETURN_IF_ERROR(reader.ReadMap(documents[0], "", reader.TopLevelFields(&config)));
  if (MaybeError error = Validate(config)) return reader.Error(*error);
  return config;
}

#undef OCLIP_CONFIG_CHECK_

}  // namespace

absl::StatusOr<ServerConfig> ParseServerConfig(absl::string_view yaml_text,
                                               absl::string_view source_name) {
  ConfigReader reader(source_name);
  // yaml-cpp reports errors by throwing; none may leave this function.
  try {
    return ParseTree(yaml_text, reader);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp 0.7 gives this one the message "bad file".
    return reader.Error(e.mark, "",
                        absl::StrCat("invalid YAML: nested more than ", e.depth(), " levels deep"));
  } catch (const YAML::Exception& e) {
    return reader.Error(e.mark, "", absl::StrCat("invalid YAML: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat(source_name, ": unexpected error while reading the config: ", e.what()));
  }
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  absl::Status readable = CheckReadableFile(path);
  if (!readable.ok()) {
    return absl::Status(readable.code(), absl::StrCat("server config: ", readable.message()));
  }
  OCLIP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseServerConfig(text, path);
}

absl::Status ValidateServerConfig(const ServerConfig& config) {
  MaybeError error = Validate(config);
  if (!error) return absl::OkStatus();
  return absl::Status(error->code, absl::StrCat(error->path, ": ", error->message));
}

absl::StatusOr<std::vector<std::string>> LoadAuthTokens(const AuthConfig& auth) {
  std::vector<std::string> tokens;
  std::set<std::string> seen;
  // A bearer token travels in an HTTP/2 header value: printable ASCII, and
  // without spaces so that "Bearer <token>" splits unambiguously.
  auto is_valid_token = [](absl::string_view token) {
    return std::all_of(token.begin(), token.end(), [](char c) { return c > ' ' && c < 0x7f; });
  };
  auto add = [&](absl::string_view token) {
    if (seen.emplace(token).second) tokens.emplace_back(token);
  };

  if (!auth.tokens_file.empty()) {
    absl::Status readable = CheckReadableFile(auth.tokens_file);
    if (!readable.ok()) {
      return absl::Status(readable.code(), absl::StrCat("auth.tokens_file: ", readable.message()));
    }
    OCLIP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(auth.tokens_file));
    int line_number = 0;
    int count = 0;
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      ++line_number;
      line = absl::StripAsciiWhitespace(line);
      if (line.empty() || line[0] == '#') continue;
      if (!is_valid_token(line)) {
        // The line is not echoed: it may be a secret.
        return absl::InvalidArgumentError(absl::StrCat(
            "auth.tokens_file '", auth.tokens_file, "' line ", line_number,
            ": a token must be printable ASCII without spaces (one token per line; comments "
            "only on lines of their own, starting with '#')"));
      }
      add(line);
      ++count;
    }
    if (count == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("auth.tokens_file '", auth.tokens_file,
                       "' holds no token (one per line; '#' starts a comment line)"));
    }
  }

  if (!auth.tokens_env.empty()) {
    if (!IsValidEnvName(auth.tokens_env)) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth.tokens_env: '", auth.tokens_env,
                       "' is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"));
    }
    const char* value = std::getenv(auth.tokens_env.c_str());
    if (value == nullptr) {
      return absl::NotFoundError(absl::StrCat("auth.tokens_env: the environment variable ",
                                              auth.tokens_env, " is not set"));
    }
    int count = 0;
    int position = 0;
    for (absl::string_view token : absl::StrSplit(value, ',')) {
      ++position;
      token = absl::StripAsciiWhitespace(token);
      if (token.empty()) continue;
      if (!is_valid_token(token)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "auth.tokens_env: token ", position, " of the environment variable ", auth.tokens_env,
            " is not printable ASCII without spaces (tokens are comma-separated)"));
      }
      add(token);
      ++count;
    }
    if (count == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("auth.tokens_env: the environment variable ", auth.tokens_env,
                       " holds no token (expected comma-separated tokens)"));
    }
  }
  return tokens;
}

}  // namespace oclip
