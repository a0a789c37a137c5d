// Tests for model/tokenizer/hf_bpe_tokenizer.h against the ids HF's RoBERTa
// tokenizer produced for shared/reference/hf/texts.json
// (hf/tiny-roberta-vit.expected.safetensors, key "tokens").

#include "core/mapped_file.h"
#include "model/tokenizer/hf_bpe_tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/model/reference.h"

namespace oclip {
namespace {

using ::oclip::testing::ExpectTokenRowsMatch;
using ::oclip::testing::LoadReferenceTensor;
using ::oclip::testing::ReferencePath;

constexpr int kContext = 77;

std::string VocabPath() { return ReferencePath("hf/tiny-roberta-tokenizer/vocab.json"); }
std::string MergesPath() { return ReferencePath("hf/tiny-roberta-tokenizer/merges.txt"); }

class HfBpeTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = HfBpeTokenizer::FromFiles(VocabPath(), MergesPath());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(tokenizer_, nullptr); }

  static HfBpeTokenizer* tokenizer_;
};

HfBpeTokenizer* HfBpeTokenizerTest::tokenizer_ = nullptr;

TEST_F(HfBpeTokenizerTest, SpecialIdsComeFromVocabJson) {
  EXPECT_EQ(tokenizer_->bos_id(), 0);
  EXPECT_EQ(tokenizer_->pad_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_EQ(tokenizer_->unk_id(), 3);
  EXPECT_EQ(tokenizer_->mask_id(), 4);
  const auto vocab = nlohmann::json::parse(ReadFileToString(VocabPath()).value());
  EXPECT_EQ(tokenizer_->vocab_size(), static_cast<int>(vocab.size()));
  EXPECT_EQ(tokenizer_->context_length(), kContext);
}

TEST_F(HfBpeTokenizerTest, MatchesReferenceTokens) {
  const auto texts = nlohmann::json::parse(ReadFileToString(ReferencePath("hf/texts.json")).value())["texts"]
                         .get<std::vector<std::string>>();
  const torch::Tensor expected =
      LoadReferenceTensor("hf/tiny-roberta-vit.expected.safetensors", "tokens");
  ASSERT_TRUE(expected.defined());
  ASSERT_EQ(expected.size(0), static_cast<int64_t>(texts.size()));
  ASSERT_EQ(expected.size(1), kContext);
  ExpectTokenRowsMatch(tokenizer_->Tokenize(texts), expected, texts);
}

TEST_F(HfBpeTokenizerTest, TruncationKeepsEndToken) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "word ";
  const std::vector<int32_t> ids = tokenizer_->Encode(text);
  ASSERT_GT(ids.size(), 75u);
  const std::vector<int64_t> row = tokenizer_->Tokenize({text});
  ASSERT_EQ(row.size(), static_cast<size_t>(kContext));
  EXPECT_EQ(row.front(), 0);
  EXPECT_EQ(row.back(), 2);
  for (int k = 0; k < 75; ++k) EXPECT_EQ(row[k + 1], ids[k]) << k;
}

TEST_F(HfBpeTokenizerTest, EmptyTextIsStartEndAndPadding) {
  std::vector<int64_t> expected(kContext, 1);
  expected[0] = 0;
  expected[1] = 2;
  EXPECT_EQ(tokenizer_->Tokenize({""}), expected);
  EXPECT_EQ(tokenizer_->Tokenize({"  \t\n "}), expected);
}

TEST_F(HfBpeTokenizerTest, NotLowerCased) {
  EXPECT_NE(tokenizer_->Encode("DOG"), tokenizer_->Encode("dog"));
}

TEST_F(HfBpeTokenizerTest, SpecialTokenStringsBecomeTheirIds) {
  const std::vector<int32_t> hello = tokenizer_->Encode("hello");
  std::vector<int32_t> expected = hello;
  expected.push_back(4);  // <mask> also takes the space before it (lstrip)
  EXPECT_EQ(tokenizer_->Encode("hello <mask>"), expected);
  std::vector<int32_t> with_eos = hello;
  with_eos.push_back(2);
  EXPECT_EQ(tokenizer_->Encode("hello</s>"), with_eos);
}

TEST_F(HfBpeTokenizerTest, InvalidUtf8AndVeryLongTextNeverFail) {
  const std::vector<int64_t> row = tokenizer_->Tokenize({"\xFF\xFE dog \xC3 \xED\xA0\x80 end"});
  EXPECT_EQ(row, tokenizer_->Tokenize({"\uFFFD\uFFFD dog \uFFFD \uFFFD\uFFFD\uFFFD end"}));
  EXPECT_EQ(row[0], 0);
  std::string text;
  while (text.size() < (10u << 20)) text += "a word ";
  const std::vector<int64_t> long_row = tokenizer_->Tokenize({text});
  EXPECT_EQ(long_row.front(), 0);
  EXPECT_EQ(long_row.back(), 2);
  const std::vector<int64_t> one_word = tokenizer_->Tokenize({std::string(10u << 20, 'x')});
  EXPECT_EQ(one_word.back(), 2);
}

TEST(HfBpeTokenizerErrorsTest, ReportsBadFiles) {
  EXPECT_EQ(HfBpeTokenizer::FromFiles("/nonexistent/vocab.json", MergesPath()).status().code(),
            absl::StatusCode::kNotFound);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("oclip_hf_bpe_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string vocab = (dir / "vocab.json").string();
  const std::string merges = (dir / "merges.txt").string();
  std::ofstream(merges) << "#version: 0.2\na b\n";
  std::ofstream(vocab) << "[1, 2]";
  EXPECT_EQ(HfBpeTokenizer::FromFiles(vocab, merges).status().code(), absl::StatusCode::kDataLoss);
  std::ofstream(vocab) << R"({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 5})";
  EXPECT_EQ(HfBpeTokenizer::FromFiles(vocab, merges).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::ofstream(merges) << "#version: 0.2\na b c\n";
  EXPECT_EQ(HfBpeTokenizer::FromFiles(VocabPath(), merges).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(HfBpeTokenizer::FromFiles(VocabPath(), MergesPath(), 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace oclip
