// `oclip bench soak` end to end, short: the soak starts its own `oclip serve`
// of the tiny ViT fixture and must report no wrong answer, no crash, a clean
// server exit, and every invalid kind answered with its own code. Against a
// server whose limits differ from what the soak is told, it must count the
// wrong codes and exit 1 (the check can fail). No speed or RSS assertions.

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/server/server_process.h"

namespace oclip {
namespace {

using ::oclip::testing::CommandResult;
using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ReferencePath;
using ::oclip::testing::RunCommand;
using ::oclip::testing::ScratchDir;
using ::oclip::testing::ServerProcess;
using ::oclip::testing::TinyVitServeArgs;

std::vector<std::string> SoakArgs(const std::string& output) {
  return {OCLIP_BINARY,
          "bench",
          "soak",
          "--image",
          ReferencePath("images/landscape.jpg"),
          "--image",
          ReferencePath("images/portrait.png"),
          "--image",
          ReferencePath("images/gray.jpg"),
          "--image",
          ReferencePath("images/wide.webp"),
          "--image",
          ReferencePath("images/tiny.png"),
          "--clients",
          "64",
          "--seconds",
          "3",
          "--output",
          output};
}

nlohmann::json ReadReport(const std::string& path) {
  const std::string text = ReadFileOrEmpty(path);
  return text.empty() ? nlohmann::json() : nlohmann::json::parse(text);
}

TEST(BenchSoakTest, OwnServerAnswersEveryKindRightAndExitsCleanly) {
  const std::string output = ScratchDir() + "/soak-own.json";
  std::vector<std::string> args = SoakArgs(output);
  for (const std::string& arg :
       {std::string("--model"), ReferencePath("tiny-vit.json"), std::string("--pretrained"),
        ReferencePath("tiny-vit.safetensors"), std::string("--tokenizer"),
        ReferencePath("bpe_simple_vocab_16e6.txt.gz"), std::string("--server-threads"),
        std::string("1"), std::string("--work-dir"), ScratchDir()}) {
    args.push_back(arg);
  }
  const CommandResult result = RunCommand(args);
  ASSERT_EQ(result.exit_code, 0) << result.command << "\n" << result.err << result.out;
  const nlohmann::json report = ReadReport(output);
  ASSERT_TRUE(report.is_object()) << result.out;

  EXPECT_EQ(report["wrong_answers"], 0) << report["wrong_answer_examples"].dump(1);
  EXPECT_EQ(report["failed_valid_requests"], 0);
  EXPECT_EQ(report["crashes"], 0);
  EXPECT_EQ(report["server_exit_code"], 0);
  EXPECT_TRUE(report["server_started_by_soak"].get<bool>());
  // Different inputs must be told apart by the answer check.
  EXPECT_GT(report["tolerance"]["min_distinct_relative_l2_error"].get<double>(),
            100 * report["tolerance"]["max_relative_l2_error"].get<double>());

  // Auth is on in the soak's own server, and there is no index: every kind
  // but absurd_k runs, each answered only with its own code.
  const std::map<std::string, std::string> expected_codes = {
      {"encode_image", "OK"},
      {"encode_text", "OK"},
      {"classify", "OK"},
      {"health", "OK"},
      {"list_models", "OK"},
      {"empty_image", "INVALID_ARGUMENT"},
      {"corrupt_jpeg", "INVALID_ARGUMENT"},
      {"too_many_texts", "INVALID_ARGUMENT"},
      {"unknown_model", "NOT_FOUND"},
      {"no_labels", "INVALID_ARGUMENT"},
      {"oversize_message", "INVALID_ARGUMENT"},
      {"huge_message", "RESOURCE_EXHAUSTED"},
      {"wrong_token", "UNAUTHENTICATED"},
      {"unknown_index", "NOT_FOUND"},
  };
  const nlohmann::json& kinds = report["kinds"];
  EXPECT_EQ(kinds.size(), expected_codes.size()) << kinds.dump(1);
  for (const auto& [kind, code] : expected_codes) {
    SCOPED_TRACE(kind);
    ASSERT_TRUE(kinds.contains(kind)) << kinds.dump(1);
    const int64_t requests = kinds[kind]["requests"];
    EXPECT_GT(requests, 0);
    EXPECT_EQ(kinds[kind]["expected"], code);
    EXPECT_EQ(kinds[kind]["codes"], nlohmann::json({{code, requests}}));
    EXPECT_EQ(kinds[kind]["wrong"], 0);
  }
  EXPECT_TRUE(report["rss_kib"].is_object());
  EXPECT_GT(report["rss_kib"]["end"].get<int64_t>(), 0);
}

TEST(BenchSoakTest, CountsWrongCodesOfARunningServer) {
  // The server keeps its default limits (64 MiB messages); the soak is told
  // 1 MiB, so its "huge" 2.5 MiB message is not over the server's gRPC limit
  // and gets INVALID_ARGUMENT (undecodable image), not RESOURCE_EXHAUSTED.
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(TinyVitServeArgs());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WaitUntilReady().ok()) << (*server)->Stderr();

  const std::string output = ScratchDir() + "/soak-external.json";
  std::vector<std::string> args = SoakArgs(output);
  for (const std::string& arg :
       {std::string("--address"), (*server)->address(), std::string("--server-pid"),
        std::to_string((*server)->pid()), std::string("--max-items"), std::string("256"),
        std::string("--max-message-bytes"), std::to_string(1 << 20), std::string("--seconds"),
        std::string("1")}) {
    args.push_back(arg);
  }
  const CommandResult result = RunCommand(args);
  EXPECT_EQ(result.exit_code, 1) << result.command << "\n" << result.err << result.out;
  const nlohmann::json report = ReadReport(output);
  ASSERT_TRUE(report.is_object()) << result.out;
  EXPECT_FALSE(report["server_started_by_soak"].get<bool>());
  EXPECT_EQ(report["crashes"], 0);
  const nlohmann::json& huge = report["kinds"]["huge_message"];
  EXPECT_GT(huge["requests"].get<int64_t>(), 0);
  EXPECT_EQ(huge["wrong"], huge["requests"]);
  EXPECT_EQ(huge["codes"], nlohmann::json({{"INVALID_ARGUMENT", huge["requests"]}}));
  EXPECT_EQ(report["wrong_answers"], huge["requests"]) << report["wrong_answer_examples"].dump(1);
  // No token: the server has no auth, so wrong_token does not run.
  EXPECT_FALSE(report["kinds"].contains("wrong_token"));
  EXPECT_EQ((*server)->Terminate(), 0);
}

}  // namespace
}  // namespace oclip
