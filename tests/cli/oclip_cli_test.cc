// The `oclip` command as a user runs it: features written by `oclip encode`
// from the reference image files must match Python OpenCLIP's, and bad input
// must give one clear line, a non-zero exit, and leave earlier outputs alone.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tests/core/float_compare.h"
#include "tests/core/run_command.h"
#include "tests/core/scoped_env.h"
#include "tests/core/scratch_dir.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "tests/core/http_test_server.h"

namespace oclip {
namespace {

using ::oclip::testing::RelativeError;

using ::oclip::testing::ScopedEnv;
using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ReferencePath;
using ::oclip::testing::ScratchDir;
using ::oclip::testing::ShellQuote;

using RunResult = ::oclip::testing::CommandResult;

// Runs `oclip ARGS`.
RunResult RunOclip(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {OCLIP_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return ::oclip::testing::RunCommand(argv);
}

std::string FreshDirectory(const std::string& name) {
  const std::string dir = ScratchDir() + "/" + name;
  std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str());
  return dir;
}

// The reference images in the order of the expected features.
std::vector<std::string> ReferenceImageOrder(const std::string& expected_file) {
  auto reader = SafetensorsReader::Open(ReferencePath(expected_file));
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return {};
  return nlohmann::json::parse((*reader)->metadata().at("image_order"))
      .get<std::vector<std::string>>();
}

std::vector<float> ReferenceFloats(const std::string& file, const std::string& key) {
  auto reader = SafetensorsReader::Open(ReferencePath(file));
  EXPECT_TRUE(reader.ok());
  auto view = (*reader)->Get(key);
  EXPECT_TRUE(view.ok());
  const float* data = reinterpret_cast<const float*>(view->data);
  return std::vector<float>(data, data + view->num_elements());
}

// --image for each reference image, in the order of the expected features.
void AddReferenceImages(std::vector<std::string>& args) {
  for (const std::string& image : ReferenceImageOrder("tiny-vit.expected.safetensors")) {
    args.push_back("--image");
    args.push_back(ReferencePath("images/" + image));
  }
}

class EncodeCommandTest : public ::testing::TestWithParam<const char*> {};

TEST_P(EncodeCommandTest, ImageFilesGiveOpenClipFeatures) {
  const std::string out = FreshDirectory("encode_parity");
  std::vector<std::string> args = {"encode", "--model", ReferencePath("tiny-vit.json"),
                                   "--pretrained", ReferencePath(GetParam()), "--output", out,
                                   "--batch-size", "3"};
  AddReferenceImages(args);
  RunResult run = RunOclip(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto features = ReadNpyFloat32(out + "/image_features.npy");
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(features->shape, (std::vector<int64_t>{7, 64}));
  const double error = RelativeError(
      features->values, ReferenceFloats("tiny-vit.expected.safetensors", "image_features"));
  EXPECT_LT(error, 1e-4);
  std::printf("[ parity   ] oclip encode (%s): relative error %.3g\n", GetParam(), error);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, EncodeCommandTest,
                         ::testing::Values("tiny-vit.safetensors", "tiny-vit.bin",
                                           "tiny-vit.epoch_7.pt"));

// --precision prepares the model as `oclip serve` does: int8 within its
// stated cosine of OpenCLIP's features, and not the fp32 numbers.
TEST(EncodeCommandTest, PrecisionInt8StaysWithinItsCosine) {
  const std::string out = FreshDirectory("encode_int8");
  std::vector<std::string> args = {"encode", "--model", ReferencePath("tiny-vit.json"),
                                   "--pretrained", ReferencePath("tiny-vit.safetensors"),
                                   "--precision", "int8", "--output", out};
  AddReferenceImages(args);
  RunResult run = RunOclip(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto features = ReadNpyFloat32(out + "/image_features.npy");
  ASSERT_TRUE(features.ok()) << features.status();
  const std::vector<float> expected =
      ReferenceFloats("tiny-vit.expected.safetensors", "image_features");
  ASSERT_EQ(features->values.size(), expected.size());
  const size_t dim = 64;
  for (size_t row = 0; row * dim < expected.size(); ++row) {
    double dot = 0, actual_norm = 0, expected_norm = 0;
    for (size_t j = row * dim; j < (row + 1) * dim; ++j) {
      dot += features->values[j] * double(expected[j]);
      actual_norm += features->values[j] * double(features->values[j]);
      expected_norm += expected[j] * double(expected[j]);
    }
    EXPECT_GE(dot / std::sqrt(actual_norm * expected_norm), 0.99) << "row " << row;
  }
  EXPECT_GT(RelativeError(features->values, expected), 1e-4);
}

TEST(EncodeCommandTest, NormalizeGivesUnitRows) {
  const std::string out = FreshDirectory("encode_normalize");
  RunResult run = RunOclip({"encode", "--model", ReferencePath("tiny-vit.json"), "--pretrained",
                            "random", "--normalize", "--image",
                            ReferencePath("images/landscape.jpg"), "--output", out});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto features = ReadNpyFloat32(out + "/image_features.npy");
  ASSERT_TRUE(features.ok());
  double norm = 0;
  for (float v : features->values) norm += v * double(v);
  EXPECT_NEAR(norm, 1.0, 1e-5);
}

TEST(EncodeCommandTest, BadImageFailsWithoutTouchingEarlierOutput) {
  const std::string out = FreshDirectory("encode_bad_image");
  const std::string previous = out + "/image_features.npy";
  std::ofstream(previous) << "earlier results";
  const std::string bad = ScratchDir() + "/not_an_image.jpg";
  std::ofstream(bad) << "this is text";
  RunResult run = RunOclip({"encode", "--model", ReferencePath("tiny-vit.json"), "--pretrained",
                            "random", "--image", ReferencePath("images/landscape.jpg"),
                            "--image", bad, "--output", out});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find(bad), std::string::npos) << run.err;
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  EXPECT_EQ(ReadFileOrEmpty(previous), "earlier results");
}

TEST(EncodeCommandTest, ErrorsAreOneLineWithAnExitCode) {
  const std::string out = FreshDirectory("encode_errors");
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    const char* message;
  };
  const Case cases[] = {
      {{"encode", "--bogus"}, 2, "unknown flag --bogus"},
      {{"encode", "--model"}, 2, "--model needs a value"},
      {{"encode", "--model", "ViT-B-32", "--pretrained", "random", "--output", out}, 1,
       "at least one --image"},
      {{"encode", "--model", "ViT-Q-99", "--pretrained", "random", "--image", "x.png",
        "--output", out},
       1, "unknown model 'ViT-Q-99'"},
      {{"encode", "--model", ReferencePath("tiny-vit.json"), "--pretrained",
        ReferencePath("tiny-rn.safetensors"), "--image", "x.png", "--output", out},
       1, "does not fit model tiny-vit"},
      {{"encode", "--model", ReferencePath("tiny-vit.json"), "--pretrained", "/nonexistent.bin",
        "--image", "x.png", "--output", out},
       1, "no such checkpoint file"},
      {{"encode", "--model", ReferencePath("tiny-vit.json"), "--pretrained", "random",
        "--precision", "fp16", "--image", "x.png", "--output", out},
       1, "--precision: fp16 needs a CUDA device"},
      {{"encode", "--model", ReferencePath("tiny-vit.json"), "--pretrained", "random",
        "--precision", "int4", "--image", "x.png", "--output", out},
       1, "--precision: "},
      {{"frobnicate"}, 2, "unknown command 'frobnicate'"},
  };
  for (const Case& c : cases) {
    RunResult run = RunOclip(c.args);
    EXPECT_EQ(run.exit_code, c.exit_code) << c.args[0] << " " << run.err;
    EXPECT_NE(run.err.find(c.message), std::string::npos) << run.err;
  }
}

TEST(EncodeCommandTest, TextsGiveOpenClipFeatures) {
  // All 14 reference texts (entities, mojibake, emoji, CJK, whitespace runs
  // with a newline, an empty string, one longer than the context): the first
  // five as --text, the rest from a --texts-file, one per line.
  std::ifstream in(ReferencePath("texts.json"));
  const auto texts = nlohmann::json::parse(in)["texts"].get<std::vector<std::string>>();
  ASSERT_EQ(texts.size(), 14u);
  const std::string out = FreshDirectory("encode_texts");
  const std::string texts_file = ScratchDir() + "/texts.txt";
  std::vector<std::string> args = {"encode", "--model", ReferencePath("tiny-vit.json"),
                                   "--pretrained", ReferencePath("tiny-vit.safetensors"),
                                   "--tokenizer", ReferencePath("bpe_simple_vocab_16e6.txt.gz"),
                                   "--texts-file", texts_file, "--output", out,
                                   "--batch-size", "5"};
  {
    std::ofstream file(texts_file);
    for (size_t i = 0; i < texts.size(); ++i) {
      if (i < 5) {
        args.push_back("--text");
        args.push_back(texts[i]);
      } else {
        ASSERT_EQ(texts[i].find('\n'), std::string::npos);
        file << texts[i] << "\n";
      }
    }
  }
  RunResult run = RunOclip(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto features = ReadNpyFloat32(out + "/text_features.npy");
  ASSERT_TRUE(features.ok()) << features.status();
  EXPECT_EQ(features->shape, (std::vector<int64_t>{14, 64}));
  const double error = RelativeError(
      features->values, ReferenceFloats("tiny-vit.expected.safetensors", "text_features"));
  EXPECT_LT(error, 1e-4);
  std::printf("[ parity   ] oclip encode texts: relative error %.3g\n", error);
}

TEST(ClassifyCommandTest, ProbabilitiesMatchOpenClipZeroShot) {
  std::ifstream in(ReferencePath("zeroshot.json"));
  const nlohmann::json zeroshot = nlohmann::json::parse(in);
  const std::string templates_file = ScratchDir() + "/templates.txt";
  {
    std::ofstream out(templates_file);
    for (const auto& t : zeroshot["openai_imagenet_templates"]) out << t.get<std::string>() << "\n";
  }
  std::vector<std::string> args = {"classify", "--model", ReferencePath("tiny-rn.json"),
                                   "--pretrained", ReferencePath("tiny-rn.safetensors"),
                                   "--tokenizer", ReferencePath("bpe_simple_vocab_16e6.txt.gz"),
                                   "--templates", templates_file, "--json", "--top-k", "100"};
  const auto classnames = zeroshot["classnames"].get<std::vector<std::string>>();
  for (const std::string& label : classnames) {
    args.push_back("--label");
    args.push_back(label);
  }
  const std::vector<std::string> images = ReferenceImageOrder("tiny-rn.expected.safetensors");
  for (const std::string& image : images) {
    args.push_back("--image");
    args.push_back(ReferencePath("images/" + image));
  }
  RunResult run = RunOclip(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const nlohmann::json results = nlohmann::json::parse(run.out);
  ASSERT_EQ(results.size(), images.size());
  const std::vector<float> expected =
      ReferenceFloats("tiny-rn.expected.safetensors", "zeroshot_probs");
  double max_error = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    ASSERT_EQ(results[i]["labels"].size(), classnames.size());
    for (const auto& entry : results[i]["labels"]) {
      const size_t c = std::find(classnames.begin(), classnames.end(),
                                 entry["label"].get<std::string>()) - classnames.begin();
      ASSERT_LT(c, classnames.size());
      max_error = std::max(max_error, std::abs(entry["probability"].get<double>() -
                                               expected[i * classnames.size() + c]));
    }
  }
  EXPECT_LT(max_error, 1e-4);
  std::printf("[ parity   ] oclip classify: max probability error %.3g\n", max_error);
}

TEST(ClassifyCommandTest, NeedsLabelsAndATokenizer) {
  RunResult no_labels = RunOclip({"classify", "--model", ReferencePath("tiny-vit.json"),
                                  "--pretrained", "random", "--image", "x.png", "--label", "a"});
  EXPECT_EQ(no_labels.exit_code, 1);
  EXPECT_NE(no_labels.err.find("at least two --label"), std::string::npos) << no_labels.err;
  RunResult no_tokenizer =
      RunOclip({"classify", "--model", ReferencePath("tiny-vit.json"), "--pretrained", "random",
                "--image", ReferencePath("images/tiny.png"), "--label", "a", "--label", "b"});
  EXPECT_EQ(no_tokenizer.exit_code, 1);
  EXPECT_NE(no_tokenizer.err.find("--tokenizer"), std::string::npos) << no_tokenizer.err;
}

TEST(ModelsCommandTest, ListsTheRegistryWithTags) {
  RunResult run = RunOclip({"models"});
  ASSERT_EQ(run.exit_code, 0);
  EXPECT_NE(run.out.find("\nViT-B-32\topenai laion400m_e31 laion400m_e32 laion2b_e16 "
                         "laion2b_s34b_b79k\n"),
            std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("\nxlm-roberta-large-ViT-H-14\tfrozen_laion5b_s13b_b90k\n"),
            std::string::npos);
}


TEST(FetchCommandTest, DownloadsOnceThenPretrainedTagsUseTheCache) {
  auto server = testing::HttpTestServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string checkpoint_path =
      "/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors";
  // Bytes of a checkpoint that is not a ViT-B-32: loading it must fail later.
  const std::string checkpoint = ReadFileOrEmpty(ReferencePath("tiny-vit.safetensors"));
  auto route = [](std::string body) {
    testing::HttpRoute route;
    route.body = std::move(body);
    return route;
  };
  (*server)->SetRoute(checkpoint_path, route(checkpoint));
  (*server)->SetRoute("/openai/clip-vit-base-patch32/resolve/main/vocab.json", route("{}"));
  (*server)->SetRoute("/openai/clip-vit-base-patch32/resolve/main/merges.txt", route("#version"));
  const std::string cache = FreshDirectory("fetch_cache");
  ScopedEnv endpoint("OCLIP_HF_ENDPOINT", (*server)->Url(""));
  ScopedEnv cache_dir("OCLIP_CACHE", cache);

  RunResult fetch = RunOclip({"fetch", "ViT-B-32", "laion2b-s34b-b79k"});
  ASSERT_EQ(fetch.exit_code, 0) << fetch.err;
  const std::string local =
      cache + "/hf/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/main/open_clip_model.safetensors";
  EXPECT_NE(fetch.out.find(local), std::string::npos) << fetch.out;
  EXPECT_EQ(ReadFileOrEmpty(local), checkpoint);
  EXPECT_EQ((*server)->RequestsFor(checkpoint_path).size(), 1u);

  // The tag resolves to the cached file: no second download, and the
  // checkpoint is then checked against the model like any file.
  RunResult encode =
      RunOclip({"encode", "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--image",
                ReferencePath("images/tiny.png"), "--output", FreshDirectory("fetch_out")});
  EXPECT_EQ(encode.exit_code, 1);
  EXPECT_NE(encode.err.find("does not fit model ViT-B-32"), std::string::npos) << encode.err;
  EXPECT_EQ((*server)->RequestsFor(checkpoint_path).size(), 1u);
}

TEST(FetchCommandTest, UnknownTagsAndOfflineServersAreClearErrors) {
  const std::string cache = FreshDirectory("fetch_errors");
  ScopedEnv cache_dir("OCLIP_CACHE", cache);
  RunResult unknown = RunOclip({"fetch", "ViT-B-32", "laion9000"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("laion2b_s34b_b79k"), std::string::npos) << unknown.err;

  // A port that is bound but not listening refuses connections, like an
  // offline host, and no other test can take it meanwhile.
  const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(socket_fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  ScopedEnv mirror("OCLIP_URL_MIRROR",
                   "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port)));
  RunResult offline = RunOclip({"fetch", "RN50", "yfcc15m"});
  ::close(socket_fd);
  EXPECT_EQ(offline.exit_code, 1);
  EXPECT_EQ(std::count(offline.err.begin(), offline.err.end(), '\n'), 1) << offline.err;
  EXPECT_NE(offline.err.find("oclip fetch: "), std::string::npos) << offline.err;
  EXPECT_EQ(RunOclip({"fetch", "RN50"}).exit_code, 2);
}

// `oclip launch` end to end (the supervision itself is tested in
// tests/core/process_group_launcher_test.cc): every rank runs with torchrun's
// environment, and one failing rank fails the launch, stopping a sibling that
// would otherwise sleep for ten minutes.
TEST(LaunchCommandTest, RanksGetTorchrunsEnvironment) {
  RunResult run = RunOclip({"launch", "--nproc-per-node", "2", "--master-port", "29622", "--",
                            "sh", "-c", "echo \"rank=$RANK/$WORLD_SIZE local=$LOCAL_RANK "
                            "addr=$MASTER_ADDR:$MASTER_PORT\""});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<std::string> lines = absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"rank=0/2 local=0 addr=127.0.0.1:29622",
                                             "rank=1/2 local=1 addr=127.0.0.1:29622"}));
}

TEST(LaunchCommandTest, OneFailingRankFailsTheLaunch) {
  RunResult run = RunOclip({"launch", "--nproc-per-node", "2", "--", "sh", "-c",
                            "if [ \"$RANK\" = 1 ]; then exit 4; fi; exec sleep 600"});
  EXPECT_EQ(run.exit_code, 4);
  EXPECT_NE(run.err.find("oclip launch: rank 1 "), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("exited with code 4"), std::string::npos) << run.err;
}

TEST(LaunchCommandTest, UsageErrors) {
  EXPECT_EQ(RunOclip({"launch", "--nproc-per-node", "2"}).exit_code, 2);
  EXPECT_EQ(RunOclip({"launch", "--nproc-per-node", "0", "--", "true"}).exit_code, 2);
  EXPECT_EQ(RunOclip({"launch", "--nnodes", "2", "--node-rank", "2", "--", "true"}).exit_code, 2);
  EXPECT_EQ(RunOclip({"launch", "--bogus", "--", "true"}).exit_code, 2);
  EXPECT_EQ(RunOclip({"launch", "--", "true"}).exit_code, 0);
}

TEST(HelpTest, EveryCommandHasHelp) {
  const std::vector<std::vector<std::string>> commands = {
      {"models"},        {"encode"},        {"classify"},           {"fetch"},
      {"serve"},         {"embed"},         {"index", "build"},     {"index", "search"},
      {"client", "health"}, {"client", "encode-image"}, {"client", "search"},
      {"bench", "serve"}, {"bench", "encode"}, {"bench", "embed"}, {"bench", "index"},
      {"train"},         {"bench", "train"}, {"launch"}};
  for (const std::vector<std::string>& command : commands) {
    std::vector<std::string> args = command;
    args.push_back("--help");
    RunResult run = RunOclip(args);
    const std::string name = absl::StrJoin(command, " ");
    EXPECT_EQ(run.exit_code, 0) << name << "\n" << run.err;
    EXPECT_NE(run.out.find("usage: oclip " + name), std::string::npos) << run.out;
  }
  // The top-level usage lists every command.
  RunResult usage = RunOclip({"--help"});
  EXPECT_EQ(usage.exit_code, 0);
  for (const char* name : {"models", "fetch", "encode", "classify", "embed", "index", "serve",
                           "client", "train", "launch", "bench"}) {
    EXPECT_NE(usage.out.find(std::string("\n  ") + name + " "), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace oclip
