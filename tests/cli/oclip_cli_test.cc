// The `oclip` command as a user runs it: features written by `oclip encode`
// from the reference image files must match Python OpenCLIP's, and bad input
// must give one clear line, a non-zero exit, and leave earlier outputs alone.

#include <sys/wait.h>

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

#include "core/npy.h"
#include "core/safetensors.h"

namespace oclip {
namespace {

std::string ReferencePath(const std::string& relative) {
  const char* env = std::getenv("OCLIP_REFERENCE_DIR");
  return std::string(env != nullptr && env[0] != '\0' ? env : OCLIP_REFERENCE_DIR_DEFAULT) + "/" +
         relative;
}

struct RunResult {
  int exit_code;
  std::string out;
  std::string err;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// 'text' for the shell, whatever the text holds.
std::string ShellQuote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Runs `oclip ARGS`.
RunResult RunOclip(const std::vector<std::string>& args) {
  const std::string out_path = ::testing::TempDir() + "/oclip_stdout";
  const std::string err_path = ::testing::TempDir() + "/oclip_stderr";
  std::string command = ShellQuote(OCLIP_BINARY);
  for (const std::string& arg : args) command += " " + ShellQuote(arg);
  command += " >" + ShellQuote(out_path) + " 2>" + ShellQuote(err_path);
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadText(out_path), ReadText(err_path)};
}

std::string FreshDirectory(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
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

double RelativeError(const std::vector<float>& actual, const std::vector<float>& expected) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff += (actual[i] - expected[i]) * double(actual[i] - expected[i]);
    norm += expected[i] * double(expected[i]);
  }
  return std::sqrt(diff / norm);
}

class EncodeCommandTest : public ::testing::TestWithParam<const char*> {};

TEST_P(EncodeCommandTest, ImageFilesGiveOpenClipFeatures) {
  const std::string out = FreshDirectory("encode_parity");
  std::vector<std::string> args = {"encode", "--model", ReferencePath("tiny-vit.json"),
                                   "--pretrained", ReferencePath(GetParam()), "--output", out,
                                   "--batch-size", "3"};
  for (const std::string& image : ReferenceImageOrder("tiny-vit.expected.safetensors")) {
    args.push_back("--image");
    args.push_back(ReferencePath("images/" + image));
  }
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
  const std::string bad = ::testing::TempDir() + "/not_an_image.jpg";
  std::ofstream(bad) << "this is text";
  RunResult run = RunOclip({"encode", "--model", ReferencePath("tiny-vit.json"), "--pretrained",
                            "random", "--image", ReferencePath("images/landscape.jpg"),
                            "--image", bad, "--output", out});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find(bad), std::string::npos) << run.err;
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  EXPECT_EQ(ReadText(previous), "earlier results");
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
  const std::string texts_file = ::testing::TempDir() + "/texts.txt";
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
  const std::string templates_file = ::testing::TempDir() + "/templates.txt";
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

TEST(ModelsCommandTest, ListsTheRegistry) {
  RunResult run = RunOclip({"models"});
  ASSERT_EQ(run.exit_code, 0);
  EXPECT_NE(run.out.find("ViT-B-32\n"), std::string::npos);
  EXPECT_NE(run.out.find("xlm-roberta-large-ViT-H-14\n"), std::string::npos);
}

TEST(HelpTest, EveryCommandHasHelp) {
  for (const char* command : {"models", "encode", "classify"}) {
    RunResult run = RunOclip({command, "--help"});
    EXPECT_EQ(run.exit_code, 0) << command;
    EXPECT_NE(run.out.find(std::string("usage: oclip ") + command), std::string::npos);
  }
}

}  // namespace
}  // namespace oclip
