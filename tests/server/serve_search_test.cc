// The Search RPC end to end, as a clip-retrieval user runs it: the fixture
// images embedded by `oclip embed`, indexed by `oclip index build`, served by
// `oclip serve --index`, queried over gRPC by text, image and embedding.
// Scores are checked against Python OpenCLIP's features of the same images
// and texts (the parity law); hits must join the right metadata.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "oclip/v1/clip.grpc.pb.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/server/server_process.h"

namespace oclip {
namespace {

namespace fs = std::filesystem;
using ::oclip::testing::CommandResult;
using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ReferencePath;
using ::oclip::testing::RunCommand;
using ::oclip::testing::ScratchDir;
using ::oclip::testing::ServerProcess;
using ::oclip::testing::TinyVitServeArgs;

constexpr char kExpected[] = "tiny-vit.expected.safetensors";
// Index scores are float32 inner products of features that match OpenCLIP's
// to ~1e-5; a flat index adds only summation-order differences.
constexpr double kScoreTolerance = 1e-4;

std::vector<std::string> ModelArgs() {
  return {"--model",      ReferencePath("tiny-vit.json"),
          "--pretrained", ReferencePath("tiny-vit.safetensors"),
          "--tokenizer",  ReferencePath("bpe_simple_vocab_16e6.txt.gz")};
}

// Rows of a [n, d] reference tensor, each L2-normalised.
std::vector<std::vector<float>> NormalizedReferenceRows(const std::string& key) {
  auto reader = SafetensorsReader::Open(ReferencePath(kExpected));
  EXPECT_TRUE(reader.ok()) << reader.status();
  auto view = (*reader)->Get(key);
  EXPECT_TRUE(view.ok()) << key;
  const float* data = reinterpret_cast<const float*>(view->data);
  const int64_t n = view->shape[0], d = view->shape[1];
  std::vector<std::vector<float>> rows;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> row(data + i * d, data + (i + 1) * d);
    double norm = 0;
    for (float v : row) norm += static_cast<double>(v) * v;
    for (float& v : row) v = static_cast<float>(v / std::sqrt(norm));
    rows.push_back(std::move(row));
  }
  return rows;
}

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  return context;
}

// One server over one index for the whole suite: embedding, indexing and
// loading the model take seconds.
class SearchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string root = ScratchDir() + "/search";
    fs::remove_all(root);
    const std::string images = root + "/images";
    fs::create_directories(images);
    // The reference's images, with the stem as key ("CLIP.png" -> "CLIP").
    auto reader = SafetensorsReader::Open(ReferencePath(kExpected));
    ASSERT_TRUE(reader.ok()) << reader.status();
    keys_ = new std::vector<std::string>();
    names_ = new std::vector<std::string>();
    for (const std::string name :
         nlohmann::json::parse((*reader)->metadata().at("image_order"))) {
      fs::copy_file(ReferencePath("images/" + name), images + "/" + name);
      std::ofstream(images + "/" + fs::path(name).stem().string() + ".txt")
          << "a picture called " << name;
      keys_->push_back(fs::path(name).stem().string());
      names_->push_back(name);
    }
    const std::string embeddings = root + "/embeddings";
    std::vector<std::string> embed = {OCLIP_BINARY, "embed", "--input-dataset", images,
                                      "--input-format", "files", "--output-folder", embeddings,
                                      "--output-dtype", "float32"};
    for (const std::string& arg : ModelArgs()) embed.push_back(arg);
    const CommandResult embedded = RunCommand(embed);
    ASSERT_EQ(embedded.exit_code, 0) << embedded.command << "\n" << embedded.err;
    folder_ = new std::string(root + "/index");
    const CommandResult built = RunCommand({OCLIP_BINARY, "index", "build", "--embeddings",
                                            embeddings, "--index-folder", *folder_});
    ASSERT_EQ(built.exit_code, 0) << built.command << "\n" << built.err;

    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
        TinyVitServeArgs({"--index", "fixture=" + *folder_}));
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_TRUE((*server)->WaitUntilReady().ok()) << (*server)->Stderr();
    server_ = server->release();
  }

  static void TearDownTestSuite() {
    delete server_;
    delete folder_;
    delete keys_;
    delete names_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "the server did not start";
    stub_ = v1::Clip::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Search(const v1::SearchRequest& request, v1::SearchResponse* response) {
    return stub_->Search(Context().get(), request, response);
  }

  // The key of each row of the index, from the metadata the embed job wrote.
  static std::map<std::string, size_t> RowOfKey() {
    std::map<std::string, size_t> rows;
    for (size_t i = 0; i < keys_->size(); ++i) rows[(*keys_)[i]] = i;
    return rows;
  }

  static inline ServerProcess* server_ = nullptr;
  static inline std::string* folder_ = nullptr;
  // In reference row order: the keys and the file names.
  static inline std::vector<std::string>* keys_ = nullptr;
  static inline std::vector<std::string>* names_ = nullptr;
  std::unique_ptr<v1::Clip::Stub> stub_;
};

// Each image's own (OpenCLIP) embedding finds that image first with cosine 1,
// and every hit's score is the cosine of the two OpenCLIP embeddings.
TEST_F(SearchTest, EmbeddingQueriesFindTheirImageWithOpenClipScores) {
  const std::vector<std::vector<float>> images = NormalizedReferenceRows("image_features");
  const std::map<std::string, size_t> row_of_key = RowOfKey();
  for (size_t i = 0; i < images.size(); ++i) {
    v1::SearchRequest request;
    request.set_index("fixture");
    request.set_k(static_cast<int>(images.size()));
    request.mutable_embedding()->mutable_values()->Add(images[i].begin(), images[i].end());
    v1::SearchResponse response;
    const grpc::Status status = Search(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.index(), "fixture");
    EXPECT_EQ(response.model(), "");
    ASSERT_EQ(response.hits_size(), static_cast<int>(images.size()));
    EXPECT_EQ(response.hits(0).key(), (*keys_)[i]);
    for (int h = 0; h < response.hits_size(); ++h) {
      const v1::SearchHit& hit = response.hits(h);
      ASSERT_EQ(row_of_key.count(hit.key()), 1u) << hit.key();
      const size_t row = row_of_key.at(hit.key());
      EXPECT_NEAR(hit.score(), Dot(images[i], images[row]), kScoreTolerance) << hit.key();
      EXPECT_EQ(hit.caption(), "a picture called " + (*names_)[row]) << hit.key();
      EXPECT_EQ(nlohmann::json::parse(hit.metadata_json(), nullptr, false).value("key", ""),
                hit.key());
      if (h > 0) {
        EXPECT_LE(hit.score(), response.hits(h - 1).score());
      }
    }
  }
}

// An image query is encoded by the server (OpenCLIP's preprocessing and
// model) and finds itself.
TEST_F(SearchTest, ImageQueriesFindThemselves) {
  for (size_t i = 0; i < keys_->size(); ++i) {
    const std::string& key = (*keys_)[i];
    const std::string name = ReferencePath("images/" + (*names_)[i]);
    v1::SearchRequest request;
    request.set_index("fixture");
    request.set_k(1);
    request.mutable_image()->set_data(ReadFileOrEmpty(name));
    v1::SearchResponse response;
    const grpc::Status status = Search(request, &response);
    ASSERT_TRUE(status.ok()) << name << ": " << status.error_message();
    EXPECT_EQ(response.model(), "tiny-vit");
    ASSERT_EQ(response.hits_size(), 1);
    EXPECT_EQ(response.hits(0).key(), key);
    EXPECT_NEAR(response.hits(0).score(), 1.0, kScoreTolerance);
  }
}

// A text query ranks the images as OpenCLIP's text and image features do.
TEST_F(SearchTest, TextQueriesRankImagesAsOpenClip) {
  const std::vector<std::vector<float>> images = NormalizedReferenceRows("image_features");
  const std::vector<std::vector<float>> texts = NormalizedReferenceRows("text_features");
  const std::vector<std::string> strings =
      nlohmann::json::parse(ReadFileOrEmpty(ReferencePath("texts.json")))
          .at("texts")
          .get<std::vector<std::string>>();
  ASSERT_EQ(strings.size(), texts.size());
  const std::map<std::string, size_t> row_of_key = RowOfKey();
  for (size_t t = 0; t < strings.size(); ++t) {
    v1::SearchRequest request;
    request.set_index("fixture");
    request.set_text(strings[t]);
    v1::SearchResponse response;
    const grpc::Status status = Search(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    // k = 0 means 10: every one of the fixture's images.
    ASSERT_EQ(response.hits_size(), static_cast<int>(std::min<size_t>(10, images.size())));
    for (const v1::SearchHit& hit : response.hits()) {
      const size_t row = row_of_key.at(hit.key());
      EXPECT_NEAR(hit.score(), Dot(texts[t], images[row]), kScoreTolerance)
          << "text '" << strings[t] << "' vs " << hit.key();
    }
  }
}

TEST_F(SearchTest, BadRequestsGetClearErrors) {
  auto expect_error = [&](const v1::SearchRequest& request, grpc::StatusCode code,
                          const std::string& message_part) {
    v1::SearchResponse response;
    const grpc::Status status = Search(request, &response);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), message_part))
        << status.error_message();
  };
  v1::SearchRequest unknown;
  unknown.set_index("nope");
  unknown.set_text("a dog");
  expect_error(unknown, grpc::StatusCode::NOT_FOUND, "unknown index 'nope' (indexes: fixture)");

  v1::SearchRequest no_query;
  no_query.set_index("fixture");
  expect_error(no_query, grpc::StatusCode::INVALID_ARGUMENT, "no query");

  v1::SearchRequest wrong_dim;
  wrong_dim.set_index("fixture");
  wrong_dim.mutable_embedding()->add_values(1.0f);
  expect_error(wrong_dim, grpc::StatusCode::INVALID_ARGUMENT, "1 values");

  v1::SearchRequest not_finite;
  not_finite.set_index("fixture");
  for (int i = 0; i < 64; ++i) not_finite.mutable_embedding()->add_values(NAN);
  expect_error(not_finite, grpc::StatusCode::INVALID_ARGUMENT, "NaN");

  v1::SearchRequest too_many;
  too_many.set_index("fixture");
  too_many.set_text("a dog");
  too_many.set_k(1001);
  expect_error(too_many, grpc::StatusCode::INVALID_ARGUMENT, "1 to 1000");

  v1::SearchRequest bad_image;
  bad_image.set_index("fixture");
  bad_image.mutable_image()->set_data("not an image");
  expect_error(bad_image, grpc::StatusCode::INVALID_ARGUMENT, "image 0");
}

// `oclip client search` prints the hits as JSON.
TEST_F(SearchTest, ClientCommandPrintsHits) {
  const CommandResult run =
      RunCommand({OCLIP_BINARY, "client", "search", "--address", server_->address(), "--index",
                  "fixture", "--image", ReferencePath("images/CLIP.png"), "--k", "2"});
  ASSERT_EQ(run.exit_code, 0) << run.command << "\n" << run.err;
  const nlohmann::json answer = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_TRUE(answer.is_object()) << run.out;
  ASSERT_EQ(answer["hits"].size(), 2u) << run.out;
  EXPECT_EQ(answer["hits"][0]["key"], "CLIP") << run.out;
  EXPECT_EQ(answer["model"], "tiny-vit");
}

// A folder without an index stops the server at start, naming the key.
TEST(SearchConfigTest, MissingIndexFolderFailsAtStart) {
  const std::string missing = ScratchDir() + "/no_such_index";
  const CommandResult run = RunCommand([&] {
    std::vector<std::string> argv = {OCLIP_BINARY};
    for (const std::string& arg : TinyVitServeArgs({"--index", "x=" + missing})) {
      argv.push_back(arg);
    }
    return argv;
  }());
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(run.err, "indexes[0].folder")) << run.err;
  EXPECT_TRUE(absl::StrContains(run.err, missing)) << run.err;
}

}  // namespace
}  // namespace oclip
