#include "server/server_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/mapped_file.h"
#include "tests/core/scoped_env.h"
#include "tests/core/scratch_dir.h"

namespace oclip {
namespace {

using ::oclip::testing::ScopedEnv;
using ::oclip::testing::ScratchPath;

constexpr char kSource[] = "test.yaml";
// The smallest valid config: one model, everything else defaulted.
constexpr char kOneModel[] = "models:\n  - name: m\n";

absl::StatusOr<ServerConfig> Parse(const std::string& yaml) {
  return ParseServerConfig(yaml, kSource);
}

std::string WriteScratchFile(const std::string& name, const std::string& content) {
  const std::string path = ScratchPath(name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

// 1-based line of the first occurrence of `needle` in `text`.
int LineOf(const std::string& text, const std::string& needle) {
  const size_t at = text.find(needle);
  EXPECT_NE(at, std::string::npos) << needle;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + at, '\n'));
}

// A name no test sets, so that getenv() returns null for it.
std::string UnsetEnvName() { return absl::StrCat("OCLIP_TEST_UNSET_", ::getpid()); }

void ExpectSameModel(const ModelServingConfig& a, const ModelServingConfig& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.pretrained, b.pretrained);
  EXPECT_EQ(a.tokenizer, b.tokenizer);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.devices, b.devices);
  EXPECT_EQ(a.precision, b.precision);
  EXPECT_EQ(a.max_batch_size, b.max_batch_size);
  EXPECT_EQ(a.max_queue_delay, b.max_queue_delay);
  EXPECT_EQ(a.queue_capacity, b.queue_capacity);
  EXPECT_EQ(a.templates_file, b.templates_file);
}

void ExpectSameLimits(const LimitsConfig& a, const LimitsConfig& b) {
  EXPECT_EQ(a.max_items_per_request, b.max_items_per_request);
  EXPECT_EQ(a.max_message_bytes, b.max_message_bytes);
  EXPECT_EQ(a.max_image_bytes, b.max_image_bytes);
  EXPECT_EQ(a.max_image_pixels, b.max_image_pixels);
  EXPECT_EQ(a.max_text_bytes, b.max_text_bytes);
  EXPECT_EQ(a.max_labels, b.max_labels);
  EXPECT_EQ(a.max_templates, b.max_templates);
  EXPECT_EQ(a.classifier_cache_size, b.classifier_cache_size);
  EXPECT_EQ(a.allowed_uri_prefixes, b.allowed_uri_prefixes);
}

// Everything but the models.
void ExpectSameServerSettings(const ServerConfig& a, const ServerConfig& b) {
  EXPECT_EQ(a.host, b.host);
  EXPECT_EQ(a.port, b.port);
  EXPECT_EQ(a.metrics_host, b.metrics_host);
  EXPECT_EQ(a.metrics_port, b.metrics_port);
  EXPECT_EQ(a.preprocess_threads, b.preprocess_threads);
  EXPECT_EQ(a.torch_threads, b.torch_threads);
  EXPECT_EQ(a.shutdown_grace, b.shutdown_grace);
  EXPECT_EQ(a.json_logs, b.json_logs);
  EXPECT_EQ(a.default_model, b.default_model);
  ExpectSameLimits(a.limits, b.limits);
  EXPECT_EQ(a.tls.cert_file, b.tls.cert_file);
  EXPECT_EQ(a.tls.key_file, b.tls.key_file);
  EXPECT_EQ(a.tls.client_ca_file, b.tls.client_ca_file);
  EXPECT_EQ(a.auth.tokens_file, b.auth.tokens_file);
  EXPECT_EQ(a.auth.tokens_env, b.auth.tokens_env);
}

// ------------------------------------------------------------- precision --

TEST(PrecisionTest, NamesRoundTripAndAliasesParse) {
  for (InferencePrecision p : {InferencePrecision::kFp32, InferencePrecision::kFp16,
                               InferencePrecision::kBf16, InferencePrecision::kInt8}) {
    absl::StatusOr<InferencePrecision> parsed = ParseInferencePrecision(InferencePrecisionName(p));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_NE(InferencePrecisionName(InferencePrecision::kFp32),
            InferencePrecisionName(InferencePrecision::kFp16));
  EXPECT_NE(InferencePrecisionName(InferencePrecision::kFp16),
            InferencePrecisionName(InferencePrecision::kBf16));
  EXPECT_EQ(*ParseInferencePrecision("float32"), InferencePrecision::kFp32);
  EXPECT_EQ(*ParseInferencePrecision("float16"), InferencePrecision::kFp16);
  EXPECT_EQ(*ParseInferencePrecision("bfloat16"), InferencePrecision::kBf16);
  EXPECT_EQ(*ParseInferencePrecision("BF16"), InferencePrecision::kBf16);
  EXPECT_EQ(*ParseInferencePrecision("INT8"), InferencePrecision::kInt8);
  EXPECT_EQ(*ParseInferencePrecision("qint8"), InferencePrecision::kInt8);
  EXPECT_EQ(InferencePrecisionName(InferencePrecision::kInt8), "int8");
}

TEST(PrecisionTest, UnknownNameIsInvalidArgument) {
  absl::StatusOr<InferencePrecision> parsed = ParseInferencePrecision("fp8");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(parsed.status().message(), "fp8")) << parsed.status();
}

TEST(PrecisionTest, Int8IsAModelSetting) {
  absl::StatusOr<ServerConfig> config =
      Parse("models:\n  - name: m\n    precision: int8\n  - name: n\n");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models.size(), 2u);
  EXPECT_EQ(config->models[0].precision, InferencePrecision::kInt8);
  EXPECT_EQ(config->models[1].precision, InferencePrecision::kFp32);
}

// --------------------------------------------------------------- parsing --

TEST(ServerConfigTest, MinimalConfigGetsTheDefaults) {
  absl::StatusOr<ServerConfig> config = Parse(kOneModel);
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameServerSettings(*config, ServerConfig());
  ASSERT_EQ(config->models.size(), 1u);
  ModelServingConfig expected;
  expected.name = "m";
  ExpectSameModel(config->models[0], expected);
}

TEST(ServerConfigTest, EmptySectionsGetTheDefaults) {
  absl::StatusOr<ServerConfig> config =
      Parse(absl::StrCat("server:\nlimits:\ntls:\nauth:\n", kOneModel));
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameServerSettings(*config, ServerConfig());
}

TEST(ServerConfigTest, DefaultsAreValid) {
  ServerConfig config;
  config.models.emplace_back();
  config.models[0].name = "m";
  EXPECT_TRUE(ValidateServerConfig(config).ok()) << ValidateServerConfig(config);
}

TEST(ServerConfigTest, FullConfigSetsEveryField) {
  const std::string cert = WriteScratchFile("full_cert.pem", "cert");
  const std::string key = WriteScratchFile("full_key.pem", "key");
  const std::string ca = WriteScratchFile("full_ca.pem", "ca");
  const std::string tokens = WriteScratchFile("full_tokens.txt", "t1\n");
  const std::string templates = WriteScratchFile("full_templates.txt", "a photo of a {}.\n");

  ServerConfig want;
  want.host = "127.0.0.1";
  want.port = 6000;
  want.metrics_host = "127.0.0.2";
  want.metrics_port = 6001;
  want.preprocess_threads = 3;
  want.torch_threads = 5;
  want.shutdown_grace = absl::Seconds(90);
  want.json_logs = true;
  want.default_model = "second";
  want.limits.max_items_per_request = 17;
  want.limits.max_message_bytes = 3 << 20;
  want.limits.max_image_bytes = 2000000;
  want.limits.max_image_pixels = 4096 * 4096;
  want.limits.max_text_bytes = 2 << 10;
  want.limits.max_labels = 11;
  want.limits.max_templates = 7;
  want.limits.classifier_cache_size = 0;
  want.limits.allowed_uri_prefixes = {"file:///data/", "gs://bucket/"};
  want.tls = {cert, key, ca};
  want.auth = {tokens, "OCLIP_TEST_TOKENS"};
  ModelServingConfig first;
  first.name = "first";
  first.model = "ViT-B-32";
  first.pretrained = "laion2b_s34b_b79k";
  first.tokenizer = "/models/tokenizer.json";
  first.seed = 18446744073709551615u;
  first.devices = {"cuda:1", "cuda:0"};
  first.precision = InferencePrecision::kBf16;
  first.max_batch_size = 48;
  first.max_queue_delay = absl::Microseconds(1500);
  first.queue_capacity = 480;
  first.templates_file = templates;
  ModelServingConfig second;
  second.name = "second";
  second.model = "";
  second.pretrained = "/ckpt/ViT-L-14.pt";
  second.precision = InferencePrecision::kFp16;
  second.max_queue_delay = absl::Minutes(2);
  want.models = {first, second};

  const std::string yaml = absl::StrReplaceAll(R"(
server:
  host: 127.0.0.1
  port: 6000
  metrics_host: 127.0.0.2
  metrics_port: 6001
  preprocess_threads: 3
  torch_threads: 5
  shutdown_grace: 1m30s
  json_logs: true
  default_model: second
models:
  - name: first
    model: ViT-B-32
    pretrained: laion2b_s34b_b79k
    tokenizer: /models/tokenizer.json
    seed: 18446744073709551615
    devices: [cuda:1, cuda:0]
    precision: bfloat16
    max_batch_size: 48
    max_queue_delay: 1.5ms
    queue_capacity: 480
    templates_file: $templates
  - name: second
    model: ""
    pretrained: /ckpt/ViT-L-14.pt
    precision: fp16
    max_queue_delay: 2m
limits:
  max_items_per_request: 17
  max_message_bytes: 3MiB
  max_image_bytes: 2MB
  max_image_pixels: 16777216
  max_text_bytes: 2 KiB
  max_labels: 11
  max_templates: 7
  classifier_cache_size: 0
  allowed_uri_prefixes:
    - file:///data/
    - gs://bucket/
tls:
  cert_file: $cert
  key_file: $key
  client_ca_file: $ca
auth:
  tokens_file: $tokens
  tokens_env: OCLIP_TEST_TOKENS
)",
                                               {{"$templates", templates},
                                                {"$cert", cert},
                                                {"$key", key},
                                                {"$ca", ca},
                                                {"$tokens", tokens}});

  absl::StatusOr<ServerConfig> config = Parse(yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectSameServerSettings(*config, want);
  ASSERT_EQ(config->models.size(), want.models.size());
  for (size_t i = 0; i < want.models.size(); ++i) {
    SCOPED_TRACE(want.models[i].name);
    ExpectSameModel(config->models[i], want.models[i]);
  }

  // Every value above differs from its default, so a key that is read into
  // the wrong field or not at all fails the comparison.
  const ServerConfig defaults;
  const ModelServingConfig model_defaults;
  EXPECT_NE(want.host, defaults.host);
  EXPECT_NE(want.port, defaults.port);
  EXPECT_NE(want.metrics_host, defaults.metrics_host);
  EXPECT_NE(want.metrics_port, defaults.metrics_port);
  EXPECT_NE(want.preprocess_threads, defaults.preprocess_threads);
  EXPECT_NE(want.torch_threads, defaults.torch_threads);
  EXPECT_NE(want.shutdown_grace, defaults.shutdown_grace);
  EXPECT_NE(want.json_logs, defaults.json_logs);
  EXPECT_NE(want.default_model, defaults.default_model);
  EXPECT_NE(want.limits.max_items_per_request, defaults.limits.max_items_per_request);
  EXPECT_NE(want.limits.max_message_bytes, defaults.limits.max_message_bytes);
  EXPECT_NE(want.limits.max_image_bytes, defaults.limits.max_image_bytes);
  EXPECT_NE(want.limits.max_image_pixels, defaults.limits.max_image_pixels);
  EXPECT_NE(want.limits.max_text_bytes, defaults.limits.max_text_bytes);
  EXPECT_NE(want.limits.max_labels, defaults.limits.max_labels);
  EXPECT_NE(want.limits.max_templates, defaults.limits.max_templates);
  EXPECT_NE(want.limits.classifier_cache_size, defaults.limits.classifier_cache_size);
  EXPECT_NE(want.limits.allowed_uri_prefixes, defaults.limits.allowed_uri_prefixes);
  EXPECT_NE(first.name, model_defaults.name);
  EXPECT_NE(first.model, model_defaults.model);
  EXPECT_NE(first.pretrained, model_defaults.pretrained);
  EXPECT_NE(first.tokenizer, model_defaults.tokenizer);
  EXPECT_NE(first.seed, model_defaults.seed);
  EXPECT_NE(first.devices, model_defaults.devices);
  EXPECT_NE(first.precision, model_defaults.precision);
  EXPECT_NE(first.max_batch_size, model_defaults.max_batch_size);
  EXPECT_NE(first.max_queue_delay, model_defaults.max_queue_delay);
  EXPECT_NE(first.queue_capacity, model_defaults.queue_capacity);
  EXPECT_NE(first.templates_file, model_defaults.templates_file);
  EXPECT_NE(second.max_queue_delay, model_defaults.max_queue_delay);
}

TEST(ServerConfigTest, ScalarSpellingsAreAccepted) {
  // Quoted numbers, yes/no booleans, a single-quoted duration, a byte count
  // without a unit, and a 'B' unit.
  const std::string yaml = absl::StrCat(R"(
server:
  port: "6000"
  json_logs: yes
  shutdown_grace: '2s'
limits:
  max_message_bytes: 1000
  max_image_bytes: 1000B
)",
                                        kOneModel);
  absl::StatusOr<ServerConfig> config = Parse(yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->port, 6000);
  EXPECT_TRUE(config->json_logs);
  EXPECT_EQ(config->shutdown_grace, absl::Seconds(2));
  EXPECT_EQ(config->limits.max_message_bytes, 1000);
  EXPECT_EQ(config->limits.max_image_bytes, 1000);
}

// ---------------------------------------------------------------- errors --

struct ErrorCase {
  const char* what;
  std::string yaml;
  absl::StatusCode code;
  std::string path;       // the key path the message must name
  std::string also = "";  // another part the message must contain
};

void ExpectError(const ErrorCase& c) {
  SCOPED_TRACE(absl::StrCat(c.what, "\n", c.yaml));
  absl::StatusOr<ServerConfig> config = Parse(c.yaml);
  ASSERT_FALSE(config.ok());
  const std::string message(config.status().message());
  EXPECT_EQ(config.status().code(), c.code) << message;
  EXPECT_TRUE(absl::StartsWith(message, kSource)) << message;
  if (!c.path.empty()) {
    EXPECT_TRUE(absl::StrContains(message, absl::StrCat(" ", c.path, ": "))) << message;
  }
  if (!c.also.empty()) {
    EXPECT_TRUE(absl::StrContains(message, c.also)) << message;
  }
}

TEST(ServerConfigErrorsTest, YamlSyntaxErrorsNameTheLineAndColumn) {
  for (const std::string yaml :
       {"models:\n  - name: m\n    devices: [cpu\n", "models:\n  - name: m\n  name: x\n  - y\n",
        "server: {port: 1\n"}) {
    absl::StatusOr<ServerConfig> config = Parse(yaml);
    ASSERT_FALSE(config.ok()) << yaml;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(config.status().message());
    EXPECT_TRUE(std::regex_search(message, std::regex("^test\\.yaml:[0-9]+:[0-9]+: invalid YAML")))
        << message;
  }
}

TEST(ServerConfigErrorsTest, DeepNestingIsAnErrorNotACrash) {
  const std::string yaml = absl::StrCat("models: ", std::string(100000, '['));
  absl::StatusOr<ServerConfig> config = Parse(yaml);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_TRUE(absl::StrContains(config.status().message(), "deep")) << config.status();
}

TEST(ServerConfigErrorsTest, DocumentShapeErrors) {
  for (const ErrorCase& c : std::vector<ErrorCase>{
           {"empty", "", absl::StatusCode::kInvalidArgument, "", "empty"},
           {"only comments", "# nothing\n", absl::StatusCode::kInvalidArgument, "", "empty"},
           {"a list", "- models\n", absl::StatusCode::kInvalidArgument, "", "expected a map"},
           {"two documents", absl::StrCat(kOneModel, "---\n", kOneModel),
            absl::StatusCode::kInvalidArgument, "", "documents"},
           {"no models", "server:\n  port: 1\n", absl::StatusCode::kInvalidArgument, "models"},
           {"empty models", "models: []\n", absl::StatusCode::kInvalidArgument, "models"},
           {"models a map", "models:\n  name: m\n", absl::StatusCode::kInvalidArgument, "models",
            "list"},
           {"section a list", absl::StrCat(kOneModel, "limits: [1]\n"),
            absl::StatusCode::kInvalidArgument, "limits", "map"},
       }) {
    ExpectError(c);
  }
}

TEST(ServerConfigErrorsTest, UnknownAndDuplicateKeys) {
  for (const ErrorCase& c : std::vector<ErrorCase>{
           {"model typo", "models:\n  - name: m\n    max_batch: 8\n",
            absl::StatusCode::kInvalidArgument, "models[0].max_batch",
            "did you mean max_batch_size?"},
           {"section typo", "modles:\n  - name: m\n", absl::StatusCode::kInvalidArgument, "modles",
            "did you mean models?"},
           {"server typo", absl::StrCat("server:\n  prot: 1\n", kOneModel),
            absl::StatusCode::kInvalidArgument, "server.prot", "did you mean port?"},
           {"nothing close", absl::StrCat("limits:\n  colour: red\n", kOneModel),
            absl::StatusCode::kInvalidArgument, "limits.colour", "max_labels"},
           {"second model", "models:\n  - name: a\n  - name: b\n    gpu: 1\n",
            absl::StatusCode::kInvalidArgument, "models[1].gpu"},
           {"duplicate key", absl::StrCat("server:\n  port: 1\n  port: 2\n", kOneModel),
            absl::StatusCode::kInvalidArgument, "server.port", "duplicate"},
           {"non-scalar key", absl::StrCat("server:\n  ? [a]\n  : 1\n", kOneModel),
            absl::StatusCode::kInvalidArgument, "server"},
       }) {
    ExpectError(c);
  }
}

TEST(ServerConfigErrorsTest, WrongTypes) {
  auto server = [](const std::string& line) {
    return absl::StrCat("server:\n  ", line, "\n", kOneModel);
  };
  auto model = [](const std::string& line) {
    return absl::StrCat("models:\n  - name: m\n    ", line, "\n");
  };
  auto limits = [](const std::string& line) {
    return absl::StrCat(kOneModel, "limits:\n  ", line, "\n");
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  for (const ErrorCase& c : std::vector<ErrorCase>{
           {"port text", server("port: abc"), kInvalid, "server.port", "integer"},
           {"port list", server("port: [1]"), kInvalid, "server.port", "integer"},
           {"port fraction", server("port: 1.5"), kInvalid, "server.port", "integer"},
           {"port no value", server("port:"), kInvalid, "server.port", "default"},
           {"port beyond int", server("port: 99999999999"), kInvalid, "server.port", "range"},
           {"bool", server("json_logs: maybe"), kInvalid, "server.json_logs", "true or false"},
           {"duration without unit", model("max_queue_delay: 5"), kInvalid,
            "models[0].max_queue_delay", "unit"},
           {"duration text", server("shutdown_grace: soon"), kInvalid, "server.shutdown_grace",
            "duration"},
           {"host a map", server("host: {a: 1}"), kInvalid, "server.host", "string"},
           {"name a list", "models:\n  - name: [m]\n", kInvalid, "models[0].name", "string"},
           {"devices a string", model("devices: cuda"), kInvalid, "models[0].devices", "list"},
           {"device a map", model("devices: [{cuda: 0}]"), kInvalid, "models[0].devices[0]",
            "string"},
           {"seed negative", model("seed: -1"), kInvalid, "models[0].seed", "non-negative"},
           {"seed beyond 64 bits", model("seed: 18446744073709551616"), kInvalid, "models[0].seed"},
           {"precision", model("precision: fp8"), kInvalid, "models[0].precision", "fp8"},
           {"bytes unit", limits("max_image_bytes: 3 parsecs"), kInvalid, "limits.max_image_bytes",
            "MiB"},
           {"bytes overflow", limits("max_image_bytes: 99999999999999GiB"), kInvalid,
            "limits.max_image_bytes"},
           {"text bytes beyond int", limits("max_text_bytes: 3GiB"), kInvalid,
            "limits.max_text_bytes", "range"},
           {"prefixes a string", limits("allowed_uri_prefixes: file:///"), kInvalid,
            "limits.allowed_uri_prefixes", "list"},
       }) {
    ExpectError(c);
  }
}

TEST(ServerConfigErrorsTest, RuleViolations) {
  auto server = [](const std::string& lines) {
    return absl::StrCat("server:\n", lines, kOneModel);
  };
  auto model = [](const std::string& lines) {
    return absl::StrCat("models:\n  - name: m\n", lines);
  };
  auto limits = [](const std::string& line) {
    return absl::StrCat(kOneModel, "limits:\n  ", line, "\n");
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  for (const ErrorCase& c : std::vector<ErrorCase>{
           {"port too big", server("  port: 70000\n"), kInvalid, "server.port", "70000"},
           {"port negative", server("  port: -1\n"), kInvalid, "server.port", "-1"},
           {"metrics port", server("  metrics_port: -2\n"), kInvalid, "server.metrics_port"},
           {"same ports", server("  port: 7000\n  metrics_port: 7000\n"), kInvalid,
            "server.metrics_port"},
           {"empty host", server("  host: ''\n"), kInvalid, "server.host"},
           {"threads", server("  preprocess_threads: -2\n"), kInvalid, "server.preprocess_threads"},
           {"torch threads", server("  torch_threads: -1\n"), kInvalid, "server.torch_threads"},
           {"negative grace", server("  shutdown_grace: -1s\n"), kInvalid, "server.shutdown_grace"},
           {"infinite grace", server("  shutdown_grace: inf\n"), kInvalid, "server.shutdown_grace",
            "finite"},
           {"unknown default model", server("  default_model: other\n"), kInvalid,
            "server.default_model", "other"},
           {"no name", "models:\n  - model: RN50\n", kInvalid, "models[0].name", "required"},
           {"bad name", "models:\n  - name: a b\n", kInvalid, "models[0].name", "[A-Za-z0-9._-]"},
           {"long name", absl::StrCat("models:\n  - name: ", std::string(129, 'a'), "\n"), kInvalid,
            "models[0].name"},
           {"duplicate names", "models:\n  - name: a\n  - name: b\n  - name: a\n", kInvalid,
            "models[2].name", "models[0]"},
           {"empty pretrained", model("    pretrained: ''\n"), kInvalid, "models[0].pretrained"},
           {"zero batch", model("    max_batch_size: 0\n"), kInvalid, "models[0].max_batch_size"},
           {"negative delay", model("    max_queue_delay: -5ms\n"), kInvalid,
            "models[0].max_queue_delay"},
           {"small queue", model("    max_batch_size: 64\n    queue_capacity: 63\n"), kInvalid,
            "models[0].queue_capacity", "max_batch_size"},
           {"default queue below batch", model("    max_batch_size: 2000\n"), kInvalid,
            "models[0].queue_capacity"},
           {"no devices", model("    devices: []\n"), kInvalid, "models[0].devices"},
           {"bad device", model("    devices: [cpu, gpu]\n"), kInvalid, "models[0].devices[1]",
            "gpu"},
           {"bad device index", model("    devices: ['cuda:-1']\n"), kInvalid,
            "models[0].devices[0]"},
           {"duplicate device", model("    devices: [cuda, 'cuda:0']\n"), kInvalid,
            "models[0].devices[1]", "devices[0]"},
           {"items", limits("max_items_per_request: 0"), kInvalid, "limits.max_items_per_request"},
           {"message beyond int", limits("max_message_bytes: 2GiB"), kInvalid,
            "limits.max_message_bytes"},
           {"image bytes", limits("max_image_bytes: 0"), kInvalid, "limits.max_image_bytes"},
           {"pixels", limits("max_image_pixels: -1"), kInvalid, "limits.max_image_pixels"},
           {"text bytes", limits("max_text_bytes: 0"), kInvalid, "limits.max_text_bytes"},
           {"labels", limits("max_labels: -1"), kInvalid, "limits.max_labels"},
           {"templates", limits("max_templates: 0"), kInvalid, "limits.max_templates"},
           {"cache", limits("classifier_cache_size: -1"), kInvalid, "limits.classifier_cache_size"},
           {"empty prefix", limits("allowed_uri_prefixes: ['file:///', '']"), kInvalid,
            "limits.allowed_uri_prefixes[1]"},
           {"cert only", absl::StrCat(kOneModel, "tls:\n  cert_file: /a.pem\n"), kInvalid,
            "tls.key_file", "both"},
           {"key only", absl::StrCat(kOneModel, "tls:\n  key_file: /a.pem\n"), kInvalid,
            "tls.cert_file", "both"},
           {"ca without cert", absl::StrCat(kOneModel, "tls:\n  client_ca_file: /a.pem\n"),
            kInvalid, "tls.client_ca_file"},
           {"bad env name", absl::StrCat(kOneModel, "auth:\n  tokens_env: 1-TOKENS\n"), kInvalid,
            "auth.tokens_env"},
       }) {
    ExpectError(c);
  }
}

TEST(ServerConfigErrorsTest, MissingFilesAreNotFound) {
  const std::string missing = ScratchPath("does_not_exist.pem");
  const std::string present = WriteScratchFile("present.pem", "x");
  const auto kNotFound = absl::StatusCode::kNotFound;
  for (const ErrorCase& c : std::vector<ErrorCase>{
           {"cert",
            absl::StrCat(kOneModel, "tls:\n  cert_file: ", missing, "\n  key_file: ", present,
                         "\n"),
            kNotFound, "tls.cert_file", missing},
           {"key",
            absl::StrCat(kOneModel, "tls:\n  cert_file: ", present, "\n  key_file: ", missing,
                         "\n"),
            kNotFound, "tls.key_file", missing},
           {"ca",
            absl::StrCat(kOneModel, "tls:\n  cert_file: ", present, "\n  key_file: ", present,
                         "\n  client_ca_file: ", missing, "\n"),
            kNotFound, "tls.client_ca_file", missing},
           {"tokens", absl::StrCat(kOneModel, "auth:\n  tokens_file: ", missing, "\n"), kNotFound,
            "auth.tokens_file", missing},
           {"templates", absl::StrCat(kOneModel, "    templates_file: ", missing, "\n"), kNotFound,
            "models[0].templates_file", missing},
           {"a directory",
            absl::StrCat(kOneModel, "auth:\n  tokens_file: ", ::oclip::testing::ScratchDir(), "\n"),
            absl::StatusCode::kInvalidArgument, "auth.tokens_file", "regular file"},
       }) {
    ExpectError(c);
  }
}

// An index folder as `oclip index build` leaves it (the files need only
// exist for the config; the server opens them).
std::string FakeIndexFolder(const std::string& name) {
  const std::string folder = ScratchPath(name);
  std::filesystem::create_directories(folder);
  std::ofstream(folder + "/image.index") << "x";
  std::ofstream(folder + "/metadata.sqlite") << "x";
  return folder;
}

TEST(ServerConfigTest, IndexesAreReadWithTheirDefaults) {
  const std::string folder = FakeIndexFolder("config_index");
  absl::StatusOr<ServerConfig> config = Parse(absl::StrCat(
      kOneModel, "indexes:\n  - name: laion\n    folder: ", folder,
      "\n  - name: tuned\n    folder: ", folder,
      "\n    model: m\n    nprobe: 64\n    ef_search: 32\nlimits:\n  max_search_k: 50\n"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->indexes.size(), 2u);
  EXPECT_EQ(config->indexes[0].name, "laion");
  EXPECT_EQ(config->indexes[0].folder, folder);
  EXPECT_EQ(config->indexes[0].kind, "image");
  EXPECT_EQ(config->indexes[0].model, "");
  EXPECT_EQ(config->indexes[0].nprobe, 0);
  EXPECT_EQ(config->indexes[1].model, "m");
  EXPECT_EQ(config->indexes[1].nprobe, 64);
  EXPECT_EQ(config->indexes[1].ef_search, 32);
  EXPECT_EQ(config->limits.max_search_k, 50);
}

TEST(ServerConfigErrorsTest, IndexRuleViolations) {
  const std::string folder = FakeIndexFolder("config_index_rules");
  const std::string index = absl::StrCat(kOneModel, "indexes:\n  - name: i\n    folder: ", folder);
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  for (const ErrorCase& c : std::vector<ErrorCase>{
           {"no name", absl::StrCat(kOneModel, "indexes:\n  - folder: ", folder, "\n"), kInvalid,
            "indexes[0].name", "required"},
           {"no folder", absl::StrCat(kOneModel, "indexes:\n  - name: i\n"), kInvalid,
            "indexes[0].folder", "required"},
           {"bad kind", absl::StrCat(index, "\n    kind: audio\n"), kInvalid, "indexes[0].kind",
            "image, text"},
           {"no text index", absl::StrCat(index, "\n    kind: text\n"),
            absl::StatusCode::kNotFound, "indexes[0].folder", "text.index"},
           {"unknown model", absl::StrCat(index, "\n    model: other\n"), kInvalid,
            "indexes[0].model", "not one of the models (m)"},
           {"negative nprobe", absl::StrCat(index, "\n    nprobe: -1\n"), kInvalid,
            "indexes[0].nprobe"},
           {"duplicate", absl::StrCat(index, "\n  - name: i\n    folder: ", folder, "\n"),
            kInvalid, "indexes[1].name", "duplicate index name 'i'"},
           {"unknown key", absl::StrCat(index, "\n    nprobes: 3\n"), kInvalid,
            "indexes[0].nprobes"},
           {"not a list", absl::StrCat(kOneModel, "indexes: 3\n"), kInvalid, "indexes"},
           {"max_search_k", absl::StrCat(kOneModel, "limits:\n  max_search_k: 0\n"), kInvalid,
            "limits.max_search_k"},
       }) {
    ExpectError(c);
  }
}

TEST(ServerConfigErrorsTest, ErrorsPointAtTheLine) {
  // A bad value, an unknown key and a rule broken by a written value each
  // name the line where the offending key is.
  const std::string yaml =
      "server:\n  port: 1\nmodels:\n  - name: m\n    max_batch_size: 0\n  - name: n\n";
  absl::StatusOr<ServerConfig> config = Parse(yaml);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StartsWith(config.status().message(),
                               absl::StrCat(kSource, ":", LineOf(yaml, "max_batch_size"), ":")))
      << config.status();

  const std::string typo = "models:\n  - name: m\n\n    devices: [cpu]\n    presicion: fp16\n";
  config = Parse(typo);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StartsWith(config.status().message(),
                               absl::StrCat(kSource, ":", LineOf(typo, "presicion"), ":")))
      << config.status();

  // A rule broken by a default points at the model it belongs to.
  const std::string defaulted = "models:\n  - name: a\n  - name: b\n    max_batch_size: 4096\n";
  config = Parse(defaulted);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StrContains(config.status().message(), "models[1].queue_capacity"))
      << config.status();
  EXPECT_TRUE(absl::StartsWith(config.status().message(),
                               absl::StrCat(kSource, ":", LineOf(defaulted, "name: b"), ":")))
      << config.status();

  // A key with no value points at its key, not at the next line.
  const std::string empty_value = "models:\n  - name: m\n    max_batch_size:\n\n\n";
  config = Parse(empty_value);
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(
      absl::StartsWith(config.status().message(),
                       absl::StrCat(kSource, ":", LineOf(empty_value, "max_batch_size"), ":")))
      << config.status();
}

TEST(ServerConfigErrorsTest, EveryTruncationOfTheExampleIsAStatus) {
  // Whatever yaml-cpp makes of a cut-off file, it comes back as a Status.
  absl::StatusOr<std::string> text =
      ReadFileToString(std::string(OCLIP_SOURCE_DIR) + "/deploy/server.example.yaml");
  ASSERT_TRUE(text.ok()) << text.status();
  int failures = 0;
  for (size_t size = 0; size < text->size(); size += 3) {
    absl::StatusOr<ServerConfig> config = Parse(text->substr(0, size));
    if (!config.ok()) {
      ++failures;
      EXPECT_NE(config.status().code(), absl::StatusCode::kInternal) << config.status();
    }
  }
  EXPECT_GT(failures, 0);
}

// ------------------------------------------------------------ validation --

TEST(ValidateServerConfigTest, ConfigsBuiltInCodeGetKeyPaths) {
  ServerConfig config;
  config.models.resize(2);
  config.models[0].name = "a";
  config.models[1].name = "b";
  ASSERT_TRUE(ValidateServerConfig(config).ok()) << ValidateServerConfig(config);

  config.models[1].max_batch_size = 0;
  absl::Status status = ValidateServerConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(status.message(), "models[1].max_batch_size: ")) << status;

  config.models[1].max_batch_size = 1;
  config.models[1].max_queue_delay = absl::InfiniteDuration();
  status = ValidateServerConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(status.message(), "models[1].max_queue_delay: ")) << status;

  config.models[1].max_queue_delay = absl::ZeroDuration();
  config.models.clear();
  status = ValidateServerConfig(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(status.message(), "models: ")) << status;
}

TEST(ValidateServerConfigTest, PortsZeroAndMetricsOffAreValid) {
  ServerConfig config;
  config.models.emplace_back();
  config.models[0].name = "m";
  config.port = 0;
  config.metrics_port = 0;
  EXPECT_TRUE(ValidateServerConfig(config).ok()) << ValidateServerConfig(config);
  config.metrics_port = -1;
  config.metrics_host = "";
  EXPECT_TRUE(ValidateServerConfig(config).ok()) << ValidateServerConfig(config);
}

// ----------------------------------------------------------------- files --

TEST(LoadServerConfigTest, ReadsAFileAndNamesItInErrors) {
  const std::string good = WriteScratchFile("good.yaml", kOneModel);
  absl::StatusOr<ServerConfig> config = LoadServerConfig(good);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->models.size(), 1u);
  EXPECT_EQ(config->models[0].name, "m");

  const std::string bad = WriteScratchFile("bad.yaml", "models:\n  - name: m\n    seed: x\n");
  config = LoadServerConfig(bad);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(config.status().message(), bad)) << config.status();
}

TEST(LoadServerConfigTest, MissingFileIsNotFound) {
  const std::string missing = ScratchPath("missing.yaml");
  absl::StatusOr<ServerConfig> config = LoadServerConfig(missing);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(config.status().message(), missing)) << config.status();
  EXPECT_EQ(LoadServerConfig(::oclip::testing::ScratchDir()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoadServerConfigTest, ExampleConfigParsesAndShowsTheDefaults) {
  absl::StatusOr<ServerConfig> config =
      LoadServerConfig(std::string(OCLIP_SOURCE_DIR) + "/deploy/server.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_GE(config->models.size(), 1u);
  // Its comments say the server, limits, tls and auth sections show the
  // defaults: keep them honest.
  ExpectSameServerSettings(*config, ServerConfig());
}

// ----------------------------------------------------------- auth tokens --

TEST(LoadAuthTokensTest, NothingConfiguredMeansNoTokens) {
  absl::StatusOr<std::vector<std::string>> tokens = LoadAuthTokens(AuthConfig());
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_TRUE(tokens->empty());
}

TEST(LoadAuthTokensTest, ReadsAFileSkippingCommentsAndBlankLines) {
  AuthConfig auth;
  auth.tokens_file = WriteScratchFile(
      "tokens.txt", "# team a\nalpha-1\n\n   beta/2=  \r\n# team b\nalpha-1\ngamma_3");
  absl::StatusOr<std::vector<std::string>> tokens = LoadAuthTokens(auth);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"alpha-1", "beta/2=", "gamma_3"}));
}

TEST(LoadAuthTokensTest, ReadsCommaSeparatedTokensFromTheEnvironment) {
  ScopedEnv env("OCLIP_TEST_TOKENS", " one, two ,,three ");
  AuthConfig auth;
  auth.tokens_env = "OCLIP_TEST_TOKENS";
  absl::StatusOr<std::vector<std::string>> tokens = LoadAuthTokens(auth);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"one", "two", "three"}));
}

TEST(LoadAuthTokensTest, BothSourcesAreUnitedWithoutDuplicates) {
  ScopedEnv env("OCLIP_TEST_TOKENS", "shared,from-env");
  AuthConfig auth;
  auth.tokens_file = WriteScratchFile("union_tokens.txt", "from-file\nshared\n");
  auth.tokens_env = "OCLIP_TEST_TOKENS";
  absl::StatusOr<std::vector<std::string>> tokens = LoadAuthTokens(auth);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"from-file", "shared", "from-env"}));
}

TEST(LoadAuthTokensTest, MissingSourcesAreNotFound) {
  AuthConfig file_auth;
  file_auth.tokens_file = ScratchPath("no_tokens_here.txt");
  EXPECT_EQ(LoadAuthTokens(file_auth).status().code(), absl::StatusCode::kNotFound);

  AuthConfig env_auth;
  env_auth.tokens_env = UnsetEnvName();
  ASSERT_EQ(std::getenv(env_auth.tokens_env.c_str()), nullptr);
  absl::Status status = LoadAuthTokens(env_auth).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(status.message(), env_auth.tokens_env)) << status;
}

TEST(LoadAuthTokensTest, SourcesWithoutTokensAreFailedPrecondition) {
  AuthConfig file_auth;
  file_auth.tokens_file = WriteScratchFile("comments_only.txt", "# nothing yet\n\n");
  EXPECT_EQ(LoadAuthTokens(file_auth).status().code(), absl::StatusCode::kFailedPrecondition);

  ScopedEnv env("OCLIP_TEST_TOKENS", " , ,");
  AuthConfig env_auth;
  env_auth.tokens_env = "OCLIP_TEST_TOKENS";
  EXPECT_EQ(LoadAuthTokens(env_auth).status().code(), absl::StatusCode::kFailedPrecondition);

  // One empty source fails even when the other has tokens: it is a mistake,
  // not a way to switch it off.
  AuthConfig both;
  both.tokens_file = WriteScratchFile("one_token.txt", "ok\n");
  both.tokens_env = "OCLIP_TEST_TOKENS";
  EXPECT_EQ(LoadAuthTokens(both).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LoadAuthTokensTest, MalformedTokensAreRejectedWithoutEchoingThem) {
  AuthConfig auth;
  auth.tokens_file = WriteScratchFile("spaced.txt", "good\nsecret with space\n");
  absl::Status status = LoadAuthTokens(auth).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "line 2")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "secret")) << status;

  ScopedEnv env("OCLIP_TEST_TOKENS",
                "fine,s\xC3\xA9"
                "cret");
  AuthConfig env_auth;
  env_auth.tokens_env = "OCLIP_TEST_TOKENS";
  status = LoadAuthTokens(env_auth).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(status.message(), "cret")) << status;

  AuthConfig bad_name;
  bad_name.tokens_env = "NOT=A NAME";
  EXPECT_EQ(LoadAuthTokens(bad_name).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
