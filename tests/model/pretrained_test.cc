// Tests of model/pretrained.h: the registry table, and FetchPretrained end to
// end against a real HTTP server on 127.0.0.1 standing in for the HF hub and
// the release URLs.
#include "model/pretrained.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tests/core/scoped_env.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/config.h"
#include "tests/core/http_test_server.h"

namespace oclip {
namespace {

using ::oclip::testing::ScopedEnv;

using ::oclip::testing::HttpRoute;
using ::oclip::testing::HttpTestServer;

constexpr std::array<float, 3> kOpenAiMean = {0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> kOpenAiStd = {0.26862954f, 0.26130258f, 0.27577711f};

bool IsLowerHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::vector<PretrainedEntry> AllEntries() {
  std::vector<PretrainedEntry> entries;
  for (const auto& [model, tag] : ListPretrained()) {
    auto entry = GetPretrained(model, tag);
    EXPECT_TRUE(entry.ok()) << model << " " << tag << ": " << entry.status();
    if (entry.ok()) entries.push_back(*entry);
  }
  return entries;
}

// ---------------------------------------------------------------------------
// The table.

TEST(PretrainedRegistryTest, PairsAreUniqueAndEveryModelHasABuiltinConfig) {
  auto pairs = ListPretrained();
  const std::set<std::pair<std::string, std::string>> unique(pairs.begin(), pairs.end());
  EXPECT_EQ(unique.size(), pairs.size());
  for (const auto& [model, tag] : pairs) {
    EXPECT_TRUE(GetBuiltinModelConfig(model).ok()) << model;
    EXPECT_EQ(NormalizePretrainedTag(tag), tag);
  }
}

TEST(PretrainedRegistryTest, CoversTheSeedModels) {
  // Every seed config has a checkpoint, except the -quickgelu variants whose
  // only tags in OpenCLIP v2.23.0 are MetaCLIP ones (out of scope).
  for (const std::string& model : ListModelNames()) {
    if (absl::StartsWith(model, "tiny")) continue;
    if (model == "ViT-B-16-quickgelu" || model == "ViT-L-14-quickgelu" ||
        model == "ViT-H-14-quickgelu") {
      continue;
    }
    EXPECT_FALSE(ListPretrainedTags(model).empty()) << model;
  }
  EXPECT_EQ(ListPretrainedTags("ViT-B-32"),
            (std::vector<std::string>{"openai", "laion400m_e31", "laion400m_e32", "laion2b_e16",
                                      "laion2b_s34b_b79k"}));
}

TEST(PretrainedRegistryTest, NormalizesTagsAndModelNames) {
  auto entry = GetPretrained("ViT/B/32", "LAION2B-S34B-B79K");
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->model, "ViT-B-32");
  EXPECT_EQ(entry->tag, "laion2b_s34b_b79k");
}

TEST(PretrainedRegistryTest, UnknownTagListsTheModelsTags) {
  auto entry = GetPretrained("ViT-B-16", "laion5b");
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kNotFound);
  for (const std::string& tag : ListPretrainedTags("ViT-B-16")) {
    EXPECT_TRUE(absl::StrContains(entry.status().message(), tag)) << entry.status();
  }
}

TEST(PretrainedRegistryTest, UnknownModelListsModels) {
  auto entry = GetPretrained("ViT-Q-99", "openai");
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(entry.status().message(), "ViT-B-32")) << entry.status();
}

TEST(PretrainedRegistryTest, SourcesFormatsAndHashes) {
  for (const PretrainedEntry& e : AllEntries()) {
    SCOPED_TRACE(e.model + " " + e.tag);
    if (e.tag == "openai") {
      // The full hash is the second-last path segment of the URL.
      EXPECT_TRUE(absl::StartsWith(e.url, "https://openaipublic.azureedge.net/clip/models/"));
      EXPECT_EQ(e.sha256.size(), 64u);
      EXPECT_TRUE(IsLowerHex(e.sha256));
      EXPECT_TRUE(absl::StrContains(e.url, "/" + e.sha256 + "/"));
      EXPECT_EQ(e.format, PretrainedFormat::kTorchScript);
    } else if (!e.from_hf_hub()) {
      // v0.2-weights names end in "-<8 hex>.pt" / ".pth".
      EXPECT_TRUE(absl::StartsWith(e.url, "https://github.com/mlfoundations/open_clip/"));
      EXPECT_EQ(e.sha256.size(), 8u);
      EXPECT_TRUE(IsLowerHex(e.sha256));
      EXPECT_TRUE(absl::StrContains(e.url, "-" + e.sha256 + ".pt"));
      EXPECT_EQ(e.format, PretrainedFormat::kTorchSave);
    } else {
      EXPECT_TRUE(absl::StartsWith(e.hf_repo, "laion/CLIP-"));
      EXPECT_EQ(e.hf_file, "open_clip_pytorch_model.bin");
      EXPECT_TRUE(e.hf_safetensors_file.empty() ||
                  e.hf_safetensors_file == "open_clip_model.safetensors");
      EXPECT_TRUE(e.sha256.empty());
    }
  }
}

TEST(PretrainedRegistryTest, NormalizationConstants) {
  for (const PretrainedEntry& e : AllEntries()) {
    SCOPED_TRACE(e.model + " " + e.tag);
    if (e.model == "ViT-L-14" && e.tag == "laion2b_s32b_b82k") {
      EXPECT_EQ(e.image_mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
      EXPECT_EQ(e.image_std, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
    } else {
      EXPECT_EQ(e.image_mean, kOpenAiMean);
      EXPECT_EQ(e.image_std, kOpenAiStd);
    }
    EXPECT_EQ(e.interpolation, "bicubic");
    EXPECT_EQ(e.resize_mode, "shortest");
  }
}

TEST(PretrainedRegistryTest, QuickGeluTrapIsExposed) {
  // Weights whose activation differs from what their listed config builds:
  // every `openai` tag under a GELU config, the yfcc15m/cc12m ResNets and the
  // laion400m ViT-B-32 weights listed under the GELU configs.
  std::set<std::string> mismatched;
  for (const PretrainedEntry& e : AllEntries()) {
    auto config = GetBuiltinModelConfig(e.model);
    ASSERT_TRUE(config.ok()) << config.status();
    if (QuickGeluMismatch(e, config->quick_gelu)) mismatched.insert(e.model + " " + e.tag);
  }
  EXPECT_EQ(mismatched, (std::set<std::string>{
                            "RN50 openai", "RN50 yfcc15m", "RN50 cc12m", "RN101 openai",
                            "RN101 yfcc15m", "RN50x4 openai", "RN50x16 openai", "RN50x64 openai",
                            "ViT-B-32 openai", "ViT-B-32 laion400m_e31", "ViT-B-32 laion400m_e32",
                            "ViT-B-16 openai", "ViT-L-14 openai", "ViT-L-14-336 openai"}));
}

// ---------------------------------------------------------------------------
// CacheDir and FetchPretrained.


TEST(CacheDirTest, HonorsOclipCache) {
  {
    ScopedEnv env("OCLIP_CACHE", "/somewhere/cache");
    EXPECT_EQ(CacheDir(), "/somewhere/cache");
  }
  ScopedEnv empty("OCLIP_CACHE", "");
  ScopedEnv home("HOME", "/home/someone");
  EXPECT_EQ(CacheDir(), "/home/someone/.cache/oclip");
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class FetchPretrainedTest : public ::testing::Test {
 protected:
  static constexpr char kB32Repo[] = "/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/";

  static void SetUpTestSuite() {
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  }

  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/oclip_fetch_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    cache_ = pattern;
    auto server = HttpTestServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(cache_);
  }

  FetchOptions Options() const {
    FetchOptions options;
    options.cache_dir = cache_;
    options.hf_endpoint = server_->Url("");
    options.progress_bar = false;
    options.retry_delay_ms = 0;
    return options;
  }

  void Serve(const std::string& path, const std::string& body) {
    HttpRoute route;
    route.body = body;
    server_->SetRoute(path, route);
  }

  std::string cache_;
  std::unique_ptr<HttpTestServer> server_;
};

TEST_F(FetchPretrainedTest, FetchesSafetensorsFromTheHubAndCachesIt) {
  const std::string path = absl::StrCat(kB32Repo, "open_clip_model.safetensors");
  Serve(path, "safetensors bytes");
  auto fetched = FetchPretrained("ViT-B-32", "laion2b_s34b_b79k", Options());
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(*fetched, cache_ +
                          "/hf/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/main/"
                          "open_clip_model.safetensors");
  EXPECT_EQ(ReadAll(*fetched), "safetensors bytes");
  EXPECT_EQ(server_->RequestsFor(path).size(), 1u);

  auto again = FetchPretrained("ViT-B-32", "laion2b_s34b_b79k", Options());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *fetched);
  EXPECT_EQ(server_->requests().size(), 1u);  // served from the cache
}

TEST_F(FetchPretrainedTest, FallsBackToTheBinWhenTheHubHasNoSafetensors) {
  Serve(absl::StrCat(kB32Repo, "open_clip_pytorch_model.bin"), "bin bytes");
  auto fetched = FetchPretrained("ViT-B-32", "laion2b_s34b_b79k", Options());
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_TRUE(absl::EndsWith(*fetched, "/main/open_clip_pytorch_model.bin")) << *fetched;
  EXPECT_EQ(ReadAll(*fetched), "bin bytes");
  auto requests = server_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_TRUE(absl::EndsWith(requests[0].path, "open_clip_model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(
      cache_ + "/hf/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/main/open_clip_model.safetensors"));

  // Cached now: no request at all, not even for the safetensors.
  ASSERT_TRUE(FetchPretrained("ViT-B-32", "laion2b_s34b_b79k", Options()).ok());
  EXPECT_EQ(server_->requests().size(), 2u);
}

TEST_F(FetchPretrainedTest, AsksForTheBinOnlyWhenPreferred) {
  Serve(absl::StrCat(kB32Repo, "open_clip_pytorch_model.bin"), "bin bytes");
  FetchOptions options = Options();
  options.prefer_safetensors = false;
  ASSERT_TRUE(FetchPretrained("ViT-B-32", "laion2b_s34b_b79k", options).ok());
  EXPECT_EQ(server_->requests().size(), 1u);
}

TEST_F(FetchPretrainedTest, FollowsTheHubsRedirectAndSendsTheToken) {
  HttpRoute redirect;
  redirect.redirect_to = "/cdn/blob-1234";
  server_->SetRoute(
      "/laion/CLIP-ViT-B-16-laion2B-s34B-b88K/resolve/main/open_clip_pytorch_model.bin", redirect);
  Serve("/cdn/blob-1234", "weights");
  FetchOptions options = Options();
  options.hf_token = "hf_secret";
  auto fetched = FetchPretrained("ViT-B-16", "laion2b_s34b_b88k", options);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(ReadAll(*fetched), "weights");
  auto requests = server_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].Header("authorization"), "Bearer hf_secret");
}

TEST_F(FetchPretrainedTest, EndpointFromTheEnvironment) {
  Serve("/laion/CLIP-ViT-g-14-laion2B-s12B-b42K/resolve/main/open_clip_pytorch_model.bin", "g");
  ScopedEnv env("OCLIP_HF_ENDPOINT", server_->Url("/"));
  FetchOptions options = Options();
  options.hf_endpoint.clear();
  auto fetched = FetchPretrained("ViT-g-14", "laion2b_s12b_b42k", options);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(ReadAll(*fetched), "g");
}

TEST_F(FetchPretrainedTest, MissingEverywhereIsNotFound) {
  auto fetched = FetchPretrained("ViT-H-14", "laion2b_s32b_b79k", Options());
  EXPECT_EQ(fetched.status().code(), absl::StatusCode::kNotFound) << fetched.status();
  EXPECT_EQ(server_->requests().size(), 2u);  // safetensors, then the .bin
}

TEST_F(FetchPretrainedTest, ReleaseFilesAreVerifiedAgainstTheHashInTheirName) {
  // The mirror serves bytes whose SHA-256 does not start with 455df137.
  Serve("/mirror/rn50-quickgelu-yfcc15m-455df137.pt", "not the real checkpoint");
  FetchOptions options = Options();
  options.url_mirror = server_->Url("/mirror/");
  auto fetched = FetchPretrained("RN50", "yfcc15m", options);
  EXPECT_EQ(fetched.status().code(), absl::StatusCode::kDataLoss) << fetched.status();
  EXPECT_FALSE(std::filesystem::exists(cache_ + "/checkpoints/rn50-quickgelu-yfcc15m-455df137.pt"));
  EXPECT_EQ(server_->RequestsFor("/mirror/rn50-quickgelu-yfcc15m-455df137.pt").size(), 1u);
}

TEST_F(FetchPretrainedTest, CustomEntryWithoutChecksum) {
  Serve("/mirror/custom.pt", "custom");
  PretrainedEntry entry;
  entry.model = "ViT-B-32";
  entry.tag = "custom";
  entry.url = "https://example.invalid/weights/custom.pt";
  FetchOptions options = Options();
  options.url_mirror = server_->Url("/mirror");
  auto fetched = FetchPretrainedEntry(entry, options);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(*fetched, cache_ + "/checkpoints/custom.pt");
  EXPECT_EQ(ReadAll(*fetched), "custom");
}

TEST_F(FetchPretrainedTest, RejectsPathTraversalInRepositoryIds) {
  PretrainedEntry entry;
  entry.hf_repo = "../../etc";
  entry.hf_file = "open_clip_pytorch_model.bin";
  auto fetched = FetchPretrainedEntry(entry, Options());
  EXPECT_EQ(fetched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(server_->requests().empty());
}

}  // namespace
}  // namespace oclip
