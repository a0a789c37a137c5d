// `oclip serve` end to end: the real binary on loopback ports, real gRPC
// clients. Features must equal OpenCLIP's reference (the parity law) and the
// offline `oclip encode` (the same code path, to kSameModelTolerance); batching, limits,
// deadlines, cancellation, shutdown and metrics are checked from outside,
// the way an operator sees them.

#include <signal.h>
#include <sys/wait.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/notification.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "oclip/v1/clip.grpc.pb.h"
#include "tests/core/float_compare.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/server/server_process.h"

namespace oclip {
namespace {

using ::oclip::testing::kSameModelTolerance;
using ::oclip::testing::RelativeError;

using ::oclip::testing::HttpGet;
using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ShellQuote;
using ::oclip::testing::ReferencePath;
using ::oclip::testing::ScratchDir;
using ::oclip::testing::ServerProcess;
using ::oclip::testing::TinyVitServeArgs;

constexpr char kExpected[] = "tiny-vit.expected.safetensors";

// Runs `oclip ARGS`; the exit code, stderr in *err.
int RunOclip(const std::vector<std::string>& args, std::string* err) {
  std::vector<std::string> argv = {OCLIP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  ::oclip::testing::CommandResult result = ::oclip::testing::RunCommand(argv);
  *err = result.err;
  return result.exit_code;
}

std::string FreshDirectory(const std::string& name) {
  const std::string dir = ScratchDir() + "/" + name;
  std::system(("rm -rf " + ShellQuote(dir) + " && mkdir -p " + ShellQuote(dir)).c_str());
  return dir;
}

struct Reference {
  std::vector<std::string> image_files;  // In the order of the expected rows.
  std::vector<std::string> texts;
  std::vector<std::string> classnames;
  std::vector<std::string> templates;  // OpenAI's 80 ImageNet templates.
};

Reference LoadReference() {
  Reference reference;
  auto reader = SafetensorsReader::Open(ReferencePath(kExpected));
  EXPECT_TRUE(reader.ok()) << reader.status();
  for (const std::string name : nlohmann::json::parse((*reader)->metadata().at("image_order"))) {
    reference.image_files.push_back(ReferencePath("images/" + name));
  }
  nlohmann::json texts = nlohmann::json::parse(ReadFileOrEmpty(ReferencePath("texts.json")));
  reference.texts = texts.at("texts").get<std::vector<std::string>>();
  nlohmann::json zeroshot = nlohmann::json::parse(ReadFileOrEmpty(ReferencePath("zeroshot.json")));
  reference.classnames = zeroshot.at("classnames").get<std::vector<std::string>>();
  reference.templates = zeroshot.at("openai_imagenet_templates").get<std::vector<std::string>>();
  return reference;
}

std::vector<float> ReferenceFloats(const std::string& key) {
  auto reader = SafetensorsReader::Open(ReferencePath(kExpected));
  EXPECT_TRUE(reader.ok());
  auto view = (*reader)->Get(key);
  EXPECT_TRUE(view.ok()) << key;
  const float* data = reinterpret_cast<const float*>(view->data);
  return std::vector<float>(data, data + view->num_elements());
}

std::vector<float> Flatten(const v1::EncodeResponse& response) {
  std::vector<float> values;
  for (const v1::Embedding& embedding : response.embeddings()) {
    values.insert(values.end(), embedding.values().begin(), embedding.values().end());
  }
  return values;
}

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = absl::Seconds(60)) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

std::unique_ptr<v1::Clip::Stub> Connect(const ServerProcess& server) {
  return v1::Clip::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
}

v1::EncodeImageRequest ImageRequest(const std::vector<std::string>& files) {
  v1::EncodeImageRequest request;
  for (const std::string& file : files) request.add_images()->set_data(ReadFileOrEmpty(file));
  return request;
}

// --- A minimal PNG writer, to make many distinct images at test time. ---

void AppendBigEndian(std::string* out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(value >> shift));
}

void AppendChunk(std::string* png, const char* type, const std::string& data) {
  AppendBigEndian(png, static_cast<uint32_t>(data.size()));
  const std::string typed = std::string(type, 4) + data;
  png->append(typed);
  AppendBigEndian(png, static_cast<uint32_t>(
                           crc32(0, reinterpret_cast<const Bytef*>(typed.data()), typed.size())));
}

// An RGB PNG of `size`x`size` whose pixels depend on `seed`.
std::string MakePng(int size, int seed) {
  std::string raw;
  for (int y = 0; y < size; ++y) {
    raw.push_back(0);  // Filter: none.
    for (int x = 0; x < size; ++x) {
      raw.push_back(static_cast<char>((x * (seed + 3) + y * 7) & 255));
      raw.push_back(static_cast<char>((y * (seed + 5) + x * seed) & 255));
      raw.push_back(static_cast<char>(((x ^ y) * (seed + 1)) & 255));
    }
  }
  uLongf compressed_size = compressBound(raw.size());
  std::string compressed(compressed_size, '\0');
  compress(reinterpret_cast<Bytef*>(compressed.data()), &compressed_size,
           reinterpret_cast<const Bytef*>(raw.data()), raw.size());
  compressed.resize(compressed_size);
  std::string header;
  AppendBigEndian(&header, size);
  AppendBigEndian(&header, size);
  header += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB.
  std::string png = "\x89PNG\r\n\x1a\n";
  AppendChunk(&png, "IHDR", header);
  AppendChunk(&png, "IDAT", compressed);
  AppendChunk(&png, "IEND", "");
  return png;
}

// --- Prometheus text: the value of one series. ---

// Parses "name{labels} value" lines into a map from "name{labels}" to value.
// Fails the test on a line that is not a comment, blank or a sample.
std::map<std::string, double> ParsePrometheus(const std::string& text) {
  std::map<std::string, double> samples;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') {
      if (!line.empty()) {
        EXPECT_TRUE(absl::StartsWith(line, "# HELP ") || absl::StartsWith(line, "# TYPE "))
            << line;
      }
      continue;
    }
    const size_t space = line.rfind(' ');
    double value = 0;
    EXPECT_NE(space, absl::string_view::npos) << line;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &value)) << line;
    samples[std::string(line.substr(0, space))] = value;
  }
  return samples;
}

double Sample(const std::map<std::string, double>& samples, const std::string& series) {
  auto it = samples.find(series);
  return it == samples.end() ? 0.0 : it->second;
}

std::map<std::string, double> ScrapeMetrics(const ServerProcess& server) {
  absl::StatusOr<std::string> page = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_TRUE(page.ok()) << page.status();
  return page.ok() ? ParsePrometheus(*page) : std::map<std::string, double>{};
}

class ServeTest : public ::testing::Test {
 protected:
  // A server with `extra` flags, ready.
  std::unique_ptr<ServerProcess> StartServer(const std::vector<std::string>& extra = {}) {
    auto server = ServerProcess::Start(TinyVitServeArgs(extra));
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    absl::Status ready = (*server)->WaitUntilReady();
    EXPECT_TRUE(ready.ok()) << ready;
    return ready.ok() ? *std::move(server) : nullptr;
  }
};

TEST_F(ServeTest, FeaturesEqualOpenClipAndOfflineEncode) {
  const Reference reference = LoadReference();
  // Offline: oclip encode on the same files and texts.
  const std::string offline = FreshDirectory("offline");
  std::vector<std::string> args = {"encode",      "--model",     ReferencePath("tiny-vit.json"),
                                   "--pretrained", ReferencePath("tiny-vit.safetensors"),
                                   "--tokenizer", ReferencePath("bpe_simple_vocab_16e6.txt.gz"),
                                   "--output",    offline};
  for (const std::string& file : reference.image_files) {
    args.push_back("--image");
    args.push_back(file);
  }
  for (const std::string& text : reference.texts) {
    args.push_back("--text");
    args.push_back(text);
  }
  std::string err;
  ASSERT_EQ(RunOclip(args, &err), 0) << err;
  auto offline_images = ReadNpyFloat32(offline + "/image_features.npy");
  auto offline_texts = ReadNpyFloat32(offline + "/text_features.npy");
  ASSERT_TRUE(offline_images.ok() && offline_texts.ok());

  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = Connect(*server);
  v1::EncodeResponse images;
  grpc::Status status =
      stub->EncodeImage(Context().get(), ImageRequest(reference.image_files), &images);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(images.model(), "tiny-vit");
  EXPECT_EQ(images.dim(), 64);
  ASSERT_EQ(images.embeddings_size(), static_cast<int>(reference.image_files.size()));

  v1::EncodeTextRequest text_request;
  for (const std::string& text : reference.texts) text_request.add_texts(text);
  v1::EncodeResponse texts;
  status = stub->EncodeText(Context().get(), text_request, &texts);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(texts.embeddings_size(), static_cast<int>(reference.texts.size()));

  const double image_vs_openclip = RelativeError(Flatten(images), ReferenceFloats("image_features"));
  const double text_vs_openclip = RelativeError(Flatten(texts), ReferenceFloats("text_features"));
  const double image_vs_offline = RelativeError(Flatten(images), offline_images->values);
  const double text_vs_offline = RelativeError(Flatten(texts), offline_texts->values);
  EXPECT_LT(image_vs_openclip, 1e-4);
  EXPECT_LT(text_vs_openclip, 1e-4);
  EXPECT_LT(image_vs_offline, kSameModelTolerance);
  EXPECT_LT(text_vs_offline, kSameModelTolerance);
  std::printf("[ parity   ] serve vs OpenCLIP: images %.3g, texts %.3g; vs oclip encode: %.3g, %.3g\n",
              image_vs_openclip, text_vs_openclip, image_vs_offline, text_vs_offline);

  // normalize: unit rows, in the direction of the raw features.
  v1::EncodeImageRequest normalized_request = ImageRequest({reference.image_files[0]});
  normalized_request.set_normalize(true);
  v1::EncodeResponse normalized;
  ASSERT_TRUE(stub->EncodeImage(Context().get(), normalized_request, &normalized).ok());
  double norm = 0;
  for (float v : normalized.embeddings(0).values()) norm += v * double(v);
  EXPECT_NEAR(norm, 1.0, 1e-5);
  EXPECT_EQ(server->Terminate(), 0) << server->Stderr();
}

// bf16 on the CPU: the same directions as OpenCLIP's fp32 features, to
// bf16's 8 mantissa bits (cosine > 0.999 per row).
TEST_F(ServeTest, Bf16FeaturesPointLikeOpenClips) {
  const Reference reference = LoadReference();
  auto server = StartServer({"--precision", "bf16"});
  ASSERT_NE(server, nullptr);
  v1::EncodeResponse images;
  grpc::Status status =
      Connect(*server)->EncodeImage(Context().get(), ImageRequest(reference.image_files), &images);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const std::vector<float> actual = Flatten(images);
  const std::vector<float> expected = ReferenceFloats("image_features");
  ASSERT_EQ(actual.size(), expected.size());
  const size_t dim = images.dim();
  for (size_t row = 0; row < actual.size() / dim; ++row) {
    double dot = 0, a2 = 0, e2 = 0;
    for (size_t j = row * dim; j < (row + 1) * dim; ++j) {
      dot += actual[j] * double(expected[j]);
      a2 += actual[j] * double(actual[j]);
      e2 += expected[j] * double(expected[j]);
    }
    EXPECT_GT(dot / std::sqrt(a2 * e2), 0.999) << "image " << row;
  }
  EXPECT_EQ(server->Terminate(), 0);
}

TEST_F(ServeTest, ClassifyEqualsOpenClipZeroShot) {
  const Reference reference = LoadReference();
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = Connect(*server);
  v1::ClassifyRequest request;
  for (const std::string& file : reference.image_files) request.add_images()->set_data(ReadFileOrEmpty(file));
  for (const std::string& label : reference.classnames) request.add_labels(label);
  for (const std::string& t : reference.templates) request.add_templates(t);
  // Twice: the second call is served from the classifier cache.
  for (int round = 0; round < 2; ++round) {
    v1::ClassifyResponse response;
    grpc::Status status = stub->Classify(Context().get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const size_t num_labels = reference.classnames.size();
    ASSERT_EQ(response.classifications_size(), static_cast<int>(reference.image_files.size()));
    // Back into [N, C] in label order, to compare with OpenCLIP's probabilities.
    std::vector<float> probabilities(reference.image_files.size() * num_labels, -1.0f);
    for (int i = 0; i < response.classifications_size(); ++i) {
      const v1::Classification& classification = response.classifications(i);
      ASSERT_EQ(classification.labels_size(), static_cast<int>(num_labels));
      for (int k = 0; k < classification.labels_size(); ++k) {
        const v1::LabelScore& score = classification.labels(k);
        EXPECT_EQ(score.label(), reference.classnames[score.index()]);
        if (k > 0) {
          EXPECT_LE(score.probability(), classification.labels(k - 1).probability());
        }
        probabilities[i * num_labels + score.index()] = score.probability();
      }
    }
    const double error = RelativeError(probabilities, ReferenceFloats("zeroshot_probs"));
    EXPECT_LT(error, 1e-4);
    std::printf("[ parity   ] Classify vs OpenCLIP zero-shot (round %d): %.3g\n", round, error);
  }
  // top_k cuts the list, best first.
  request.set_top_k(2);
  v1::ClassifyResponse top2;
  ASSERT_TRUE(stub->Classify(Context().get(), request, &top2).ok());
  EXPECT_EQ(top2.classifications(0).labels_size(), 2);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST_F(ServeTest, ConcurrentClientsEachGetTheirOwnFeatures) {
  constexpr int kClients = 64;
  const std::string dir = FreshDirectory("concurrent");
  std::vector<std::string> files;
  std::vector<std::string> args = {"encode", "--model", ReferencePath("tiny-vit.json"),
                                   "--pretrained", ReferencePath("tiny-vit.safetensors"),
                                   "--output", dir};
  for (int i = 0; i < kClients; ++i) {
    files.push_back(absl::StrCat(dir, "/image", i, ".png"));
    std::ofstream(files.back(), std::ios::binary) << MakePng(48 + i % 5 * 8, i);
    args.push_back("--image");
    args.push_back(files.back());
  }
  std::string err;
  ASSERT_EQ(RunOclip(args, &err), 0) << err;
  auto expected = ReadNpyFloat32(dir + "/image_features.npy");
  ASSERT_TRUE(expected.ok());
  const int dim = static_cast<int>(expected->shape[1]);

  auto server = StartServer({"--max-batch-size", "16", "--max-queue-delay", "100ms"});
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  absl::Barrier* start = new absl::Barrier(kClients);
  std::vector<double> errors(kClients, 1.0);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      auto stub = v1::Clip::NewStub(channel);
      v1::EncodeImageRequest request = ImageRequest({files[i]});
      if (start->Block()) delete start;
      v1::EncodeResponse response;
      grpc::Status status = stub->EncodeImage(Context().get(), request, &response);
      if (!status.ok() || response.embeddings_size() != 1) return;
      std::vector<float> own(expected->values.begin() + i * dim,
                             expected->values.begin() + (i + 1) * dim);
      errors[i] = RelativeError(Flatten(response), own);
    });
  }
  for (std::thread& client : clients) client.join();
  for (int i = 0; i < kClients; ++i) EXPECT_LT(errors[i], kSameModelTolerance) << "client " << i;

  const auto metrics = ScrapeMetrics(*server);
  const std::string labels = "model=\"tiny-vit\",kind=\"image\"";
  const double batches = Sample(metrics, "oclip_batch_size_count{" + labels + "}");
  const double single = Sample(metrics, "oclip_batch_size_bucket{" + labels + ",le=\"1\"}");
  // Warm-up runs outside the batcher, so every batch here is a client batch.
  EXPECT_EQ(Sample(metrics, "oclip_batch_size_sum{" + labels + "}"), kClients);
  EXPECT_GT(batches, single) << "no batch held more than one image";
  EXPECT_LT(batches, kClients);
  std::printf("[ batching ] %d single-image requests ran in %.0f batches\n", kClients, batches);
  EXPECT_EQ(server->Terminate(), 0);
}

// Every bad input gets its code and a message naming the item; the server
// answers normally afterwards.
TEST_F(ServeTest, BadInputGetsItsCodeAndTheServerGoesOn) {
  auto server = StartServer({"--max-batch-size", "4"});
  ASSERT_NE(server, nullptr);
  auto stub = Connect(*server);
  const std::string good = ReadFileOrEmpty(ReferencePath("images/landscape.jpg"));
  struct Case {
    std::string name;
    v1::EncodeImageRequest request;
    grpc::StatusCode code;
    std::string message_part;
  };
  std::vector<Case> cases;
  cases.push_back({"empty", {}, grpc::StatusCode::INVALID_ARGUMENT, "no images"});
  {
    v1::EncodeImageRequest request;
    for (int i = 0; i < 257; ++i) request.add_images()->set_data(good.substr(0, 10));
    cases.push_back({"too many", request, grpc::StatusCode::INVALID_ARGUMENT, "257 images"});
  }
  {
    v1::EncodeImageRequest request;
    request.add_images()->set_data(good);
    request.add_images()->set_data("definitely not an image");
    request.add_images()->set_data(good);
    request.add_images()->set_data(good.substr(0, good.size() / 3));  // Truncated JPEG.
    cases.push_back({"corrupt", request, grpc::StatusCode::INVALID_ARGUMENT, "image 1"});
  }
  {
    v1::EncodeImageRequest request;
    request.add_images();
    cases.push_back({"no source", request, grpc::StatusCode::INVALID_ARGUMENT, "image 0"});
  }
  {
    v1::EncodeImageRequest request;
    request.add_images()->set_uri("file:///etc/passwd");
    cases.push_back({"uri not allowed", request, grpc::StatusCode::INVALID_ARGUMENT, "allowed"});
  }
  {
    v1::EncodeImageRequest request = ImageRequest({ReferencePath("images/landscape.jpg")});
    request.set_model("no-such-model");
    cases.push_back({"unknown model", request, grpc::StatusCode::NOT_FOUND, "no-such-model"});
  }
  {
    // Over the 64 MiB message limit: refused by the service, naming the limit.
    v1::EncodeImageRequest request;
    for (int i = 0; i < 3; ++i) request.add_images()->set_data(std::string(22 << 20, 'x'));
    cases.push_back({"message too large", request, grpc::StatusCode::INVALID_ARGUMENT,
                     "the limit is 67108864"});
  }
  {
    // Over twice the limit: gRPC refuses it unread.
    v1::EncodeImageRequest request;
    for (int i = 0; i < 5; ++i) request.add_images()->set_data(std::string(30 << 20, 'x'));
    cases.push_back({"message far too large", request, grpc::StatusCode::RESOURCE_EXHAUSTED, ""});
  }
  {
    v1::EncodeImageRequest request;
    request.add_images()->set_data(std::string((32 << 20) + 1, 'x'));
    cases.push_back({"image too large", request, grpc::StatusCode::INVALID_ARGUMENT, "image 0"});
  }
  for (const Case& c : cases) {
    v1::EncodeResponse response;
    grpc::Status status = stub->EncodeImage(Context().get(), c.request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), c.message_part))
        << c.name << ": " << status.error_message();
  }
  // The corrupt case names every bad image, not only the first.
  {
    v1::EncodeResponse response;
    grpc::Status status = stub->EncodeImage(Context().get(), cases[2].request, &response);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "image 3")) << status.error_message();
  }
  // Text and classify limits.
  v1::EncodeResponse response;
  EXPECT_EQ(stub->EncodeText(Context().get(), v1::EncodeTextRequest(), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::EncodeTextRequest long_text;
  long_text.add_texts(std::string(10000, 'a'));
  EXPECT_EQ(stub->EncodeText(Context().get(), long_text, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::ClassifyRequest no_labels;
  no_labels.add_images()->set_data(good);
  v1::ClassifyResponse classified;
  EXPECT_EQ(stub->Classify(Context().get(), no_labels, &classified).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::ClassifyRequest bad_template = no_labels;
  bad_template.add_labels("dog");
  bad_template.add_templates("a photo without a slot");
  grpc::Status status = stub->Classify(Context().get(), bad_template, &classified);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "template 0")) << status.error_message();

  // Still serving.
  status = stub->EncodeImage(Context().get(), ImageRequest({ReferencePath("images/landscape.jpg")}),
                             &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(server->Terminate(), 0) << server->Stderr();
}

// A full queue refuses a request whole; the queued one still completes.
TEST_F(ServeTest, FullQueueIsResourceExhausted) {
  auto server = StartServer(
      {"--max-batch-size", "8", "--queue-capacity", "8", "--max-queue-delay", "1s"});
  ASSERT_NE(server, nullptr);
  auto stub = Connect(*server);
  std::vector<std::string> six(6, ReferencePath("images/landscape.jpg"));
  std::vector<std::string> three(3, ReferencePath("images/landscape.jpg"));
  // The six wait for the batch delay; the three do not fit beside them.
  v1::EncodeResponse first_response;
  grpc::Status first_status;
  absl::Notification first_done;
  grpc::ClientContext first_context;
  first_context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  v1::EncodeImageRequest first_request = ImageRequest(six);
  stub->async()->EncodeImage(&first_context, &first_request, &first_response,
                             [&](grpc::Status s) {
                               first_status = s;
                               first_done.Notify();
                             });
  // Wait (without sleeping) until the six are queued: the queue gauge says so.
  for (;;) {
    const auto metrics = ScrapeMetrics(*server);
    if (Sample(metrics, "oclip_queue_depth{model=\"tiny-vit\"}") >= 6) break;
    ASSERT_FALSE(first_done.HasBeenNotified()) << first_status.error_message();
    std::this_thread::yield();
  }
  v1::EncodeResponse response;
  grpc::Status status = stub->EncodeImage(Context().get(), ImageRequest(three), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  first_done.WaitForNotification();
  EXPECT_TRUE(first_status.ok()) << first_status.error_message();
  EXPECT_EQ(first_response.embeddings_size(), 6);
  EXPECT_EQ(server->Terminate(), 0);
}

// A deadline that passes while the item waits for its batch: the client gets
// DEADLINE_EXCEEDED and the item is dropped, not computed.
TEST_F(ServeTest, ExpiredItemsAreDroppedNotComputed) {
  auto server = StartServer({"--max-batch-size", "8", "--max-queue-delay", "2s"});
  ASSERT_NE(server, nullptr);
  auto stub = Connect(*server);
  v1::EncodeResponse response;
  grpc::Status status =
      stub->EncodeImage(Context(absl::Milliseconds(300)).get(),
                        ImageRequest({ReferencePath("images/landscape.jpg")}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The worker meets the item when the batch delay is over; a later call
  // runs after that, so by its answer the drop is counted.
  status = stub->EncodeText(Context().get(), [] {
    v1::EncodeTextRequest request;
    request.add_texts("after the deadline");
    return request;
  }(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto metrics = ScrapeMetrics(*server);
  EXPECT_EQ(Sample(metrics, "oclip_items_dropped_total{model=\"tiny-vit\",reason=\"deadline\"}"), 1);
  EXPECT_EQ(Sample(metrics, "oclip_items_total{model=\"tiny-vit\",kind=\"image\"}"), 0);
  EXPECT_EQ(server->Terminate(), 0);
}

// The metrics page is Prometheus text whose request counters equal the calls
// made, by RPC and code.
TEST_F(ServeTest, MetricsCountEveryCall) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = Connect(*server);
  constexpr int kTexts = 5, kImages = 3, kBad = 2;
  v1::EncodeTextRequest text_request;
  text_request.add_texts("a dog");
  v1::EncodeResponse response;
  for (int i = 0; i < kTexts; ++i) ASSERT_TRUE(stub->EncodeText(Context().get(), text_request, &response).ok());
  for (int i = 0; i < kImages; ++i) {
    ASSERT_TRUE(stub->EncodeImage(Context().get(),
                                  ImageRequest({ReferencePath("images/landscape.jpg")}), &response)
                    .ok());
  }
  for (int i = 0; i < kBad; ++i) {
    EXPECT_FALSE(stub->EncodeImage(Context().get(), v1::EncodeImageRequest(), &response).ok());
  }
  absl::StatusOr<std::string> page = HttpGet(server->metrics_port(), "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(absl::StrContains(*page, "# TYPE oclip_requests_total counter"));
  EXPECT_TRUE(absl::StrContains(*page, "# TYPE oclip_stage_duration_seconds histogram"));
  const auto metrics = ParsePrometheus(*page);
  EXPECT_EQ(Sample(metrics, "oclip_requests_total{rpc=\"EncodeText\",code=\"OK\"}"), kTexts);
  EXPECT_EQ(Sample(metrics, "oclip_requests_total{rpc=\"EncodeImage\",code=\"OK\"}"), kImages);
  EXPECT_EQ(Sample(metrics, "oclip_requests_total{rpc=\"EncodeImage\",code=\"INVALID_ARGUMENT\"}"),
            kBad);
  EXPECT_EQ(Sample(metrics, "oclip_request_duration_seconds_count{rpc=\"EncodeText\"}"), kTexts);
  EXPECT_EQ(Sample(metrics, "oclip_items_total{model=\"tiny-vit\",kind=\"text\"}"), kTexts);
  EXPECT_EQ(Sample(metrics, "oclip_items_total{model=\"tiny-vit\",kind=\"image\"}"), kImages);
  EXPECT_EQ(Sample(metrics, "oclip_model_ready{model=\"tiny-vit\"}"), 1);
  EXPECT_EQ(server->Terminate(), 0);
}

TEST_F(ServeTest, StreamAnswersEveryRequestByIdAndFailsBadOnesAlone) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = Connect(*server);
  auto context = Context();
  auto stream = stub->EncodeImageStream(context.get());
  constexpr int kRequests = 10;
  for (int i = 0; i < kRequests; ++i) {
    v1::EncodeImageStreamRequest request;
    request.set_id(100 + i);
    if (i == 4) {
      request.mutable_request()->add_images()->set_data("not an image");
    } else {
      *request.mutable_request() = ImageRequest({ReferencePath("images/landscape.jpg")});
    }
    ASSERT_TRUE(stream->Write(request));
  }
  stream->WritesDone();
  std::map<uint64_t, v1::EncodeImageStreamResponse> answers;
  v1::EncodeImageStreamResponse answer;
  while (stream->Read(&answer)) answers[answer.id()] = answer;
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(answers.size(), static_cast<size_t>(kRequests));
  const std::vector<float> first = Flatten(answers[100].response());
  for (int i = 0; i < kRequests; ++i) {
    const v1::EncodeImageStreamResponse& a = answers[100 + i];
    if (i == 4) {
      EXPECT_EQ(a.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
      EXPECT_TRUE(absl::StrContains(a.error_message(), "image 0")) << a.error_message();
    } else {
      EXPECT_EQ(a.code(), 0) << a.error_message();
      EXPECT_LT(RelativeError(Flatten(a.response()), first), kSameModelTolerance);
    }
  }
  EXPECT_EQ(server->Terminate(), 0);
}

TEST_F(ServeTest, HealthAndListModels) {
  auto started = ServerProcess::Start(TinyVitServeArgs());
  ASSERT_TRUE(started.ok()) << started.status();
  auto server = *std::move(started);
  // Watch from before the model is ready: it must end SERVING.
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  for (const std::string service : {"", "tiny-vit"}) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    auto context = Context();
    auto watch = health->Watch(context.get(), request);
    grpc::health::v1::HealthCheckResponse response;
    bool serving = false;
    while (!serving && watch->Read(&response)) {
      serving = response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    }
    EXPECT_TRUE(serving) << "service '" << service << "'";
    context->TryCancel();
    watch->Finish();
  }
  grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no-such-model");
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(health->Check(Context().get(), unknown, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);

  auto stub = v1::Clip::NewStub(channel);
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub->ListModels(Context().get(), v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  const v1::ModelInfo& info = models.models(0);
  EXPECT_EQ(info.name(), "tiny-vit");
  EXPECT_TRUE(info.ready());
  EXPECT_TRUE(info.is_default());
  // The tiny fixture's dimensions, from its config file.
  nlohmann::json config = nlohmann::json::parse(ReadFileOrEmpty(ReferencePath("tiny-vit.json")));
  EXPECT_EQ(info.embed_dim(), config.at("embed_dim").get<int>());
  EXPECT_EQ(info.image_size(), config.at("vision_cfg").at("image_size").get<int>());
  EXPECT_EQ(info.precision(), "fp32");
  EXPECT_EQ(server->Terminate(), 0);
}

// SIGTERM while clients keep calling. Calls wait 200 ms in the queue; the
// signal comes when every client has one accepted call queued, and each of
// those must complete with correct features during shutdown. Calls that reach the
// server after the signal are refused (UNAVAILABLE from the draining
// service, or CANCELLED by gRPC for a call it had not yet handed over), and
// nothing else happens; the process exits 0.
TEST_F(ServeTest, SigtermDuringLoadLosesNoAcceptedCall) {
  auto server = StartServer({"--max-batch-size", "64", "--max-queue-delay", "200ms",
                             "--shutdown-grace", "30s"});
  ASSERT_NE(server, nullptr);
  auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
  const std::string image = ReferencePath("images/landscape.jpg");
  v1::EncodeResponse reference_answer;
  ASSERT_TRUE(v1::Clip::NewStub(channel)
                  ->EncodeImage(Context().get(), ImageRequest({image}), &reference_answer)
                  .ok());
  const std::vector<float> expected = Flatten(reference_answer);

  struct Call {
    absl::Time start, end;
    grpc::StatusCode code;
    bool correct;
  };
  constexpr int kClients = 8;
  std::vector<std::vector<Call>> calls(kClients);
  std::atomic<int> completed{0};
  absl::Notification enough_load;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto stub = v1::Clip::NewStub(channel);
      const v1::EncodeImageRequest request = ImageRequest({image});
      for (;;) {
        v1::EncodeResponse response;
        Call call;
        call.start = absl::Now();
        grpc::Status status = stub->EncodeImage(Context().get(), request, &response);
        call.end = absl::Now();
        call.code = status.error_code();
        call.correct =
            status.ok() && RelativeError(Flatten(response), expected) < kSameModelTolerance;
        calls[c].push_back(call);
        if (!status.ok()) return;  // Refused: the server is going away.
        if (++completed >= 2 * kClients && !enough_load.HasBeenNotified()) enough_load.Notify();
      }
    });
  }
  enough_load.WaitForNotification();
  // Signal while every client's next call waits in the queue (accepted).
  while (Sample(ScrapeMetrics(*server), "oclip_queue_depth{model=\"tiny-vit\"}") < kClients) {
    std::this_thread::yield();
  }
  const absl::Time signal_time = absl::Now();
  const int exit_code = server->Terminate();
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(exit_code, 0) << server->Stderr();

  int in_flight_at_signal = 0, answered = 0, refused = 0;
  for (const std::vector<Call>& client_calls : calls) {
    for (const Call& call : client_calls) {
      if (call.code == grpc::StatusCode::OK) {
        EXPECT_TRUE(call.correct);
        ++answered;
        // Queued at the signal, answered during shutdown.
        if (call.start < signal_time && call.end > signal_time) {
          ++in_flight_at_signal;
        }
        continue;
      }
      ++refused;
      EXPECT_TRUE(call.code == grpc::StatusCode::UNAVAILABLE ||
                  call.code == grpc::StatusCode::CANCELLED)
          << "code " << call.code;
      // Every call sent before the signal was queued, i.e. accepted.
      EXPECT_GT(call.start, signal_time)
          << "an accepted call failed with code " << call.code;
    }
  }
  EXPECT_EQ(in_flight_at_signal, kClients);
  std::printf("[ shutdown ] %d answered (%d of them in flight at SIGTERM), %d refused\n",
              answered, in_flight_at_signal, refused);
}

TEST_F(ServeTest, BadConfigFailsAtStartWithOneLine) {
  std::string err;
  EXPECT_EQ(RunOclip(TinyVitServeArgs({"--max-batch-size", "0"}), &err), 1);
  EXPECT_TRUE(absl::StrContains(err, "max_batch_size")) << err;
  EXPECT_EQ(RunOclip({"serve", "--model", ReferencePath("tiny-vit.json"), "--pretrained",
                      "/no/such/checkpoint.safetensors", "--tokenizer",
                      ReferencePath("bpe_simple_vocab_16e6.txt.gz"), "--host", "127.0.0.1",
                      "--port", "0", "--metrics-port", "-1"},
                     &err),
            1);
  EXPECT_TRUE(absl::StrContains(err, "/no/such/checkpoint.safetensors")) << err;
}

}  // namespace
}  // namespace oclip
