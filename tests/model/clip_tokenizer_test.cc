// Tests for model/tokenizer/clip_tokenizer.h and the BPE machinery of
// model/tokenizer/bpe.h, against OpenCLIP's outputs in shared/reference
// (texts.json, tokens.safetensors) and the golden vectors of the research
// notes (openclip.md §4.1).

#include "core/mapped_file.h"
#include "model/tokenizer/clip_tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "model/tokenizer/bpe.h"
#include "tests/model/reference.h"

namespace oclip {
namespace {

using ::oclip::testing::ExpectTokenRowsMatch;
using ::oclip::testing::LoadReferenceTensor;
using ::oclip::testing::ReferencePath;

constexpr int kContext = 77;

std::string GunzipReference(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  std::string out;
  if (file == nullptr) return out;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
  gzclose(file);
  return out;
}

std::vector<int64_t> Row(std::vector<int64_t> prefix) {
  prefix.resize(kContext, 0);
  return prefix;
}

class ClipTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = ClipTokenizer::FromBpeGzip(ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();
    texts_ = nlohmann::json::parse(ReadFileToString(ReferencePath("texts.json")).value());
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(tokenizer_, nullptr); }

  static std::vector<int64_t> Tokens(const std::string& text) {
    return tokenizer_->Tokenize({text});
  }

  static ClipTokenizer* tokenizer_;
  static nlohmann::json texts_;
};

ClipTokenizer* ClipTokenizerTest::tokenizer_ = nullptr;
nlohmann::json ClipTokenizerTest::texts_;

TEST_F(ClipTokenizerTest, VocabularyLayout) {
  EXPECT_EQ(tokenizer_->vocab_size(), texts_["vocab_size"].get<int>());
  EXPECT_EQ(tokenizer_->context_length(), kContext);
  EXPECT_EQ(ClipTokenizer::kStartOfText, texts_["sot"].get<int>());
  EXPECT_EQ(ClipTokenizer::kEndOfText, texts_["eot"].get<int>());
  // Ids 0-255 follow the byte table's order: id 0 is "!", not byte 0.
  EXPECT_EQ(tokenizer_->Decode({0}), "!");
  EXPECT_EQ(tokenizer_->Decode({256}), "! ");
}

TEST_F(ClipTokenizerTest, MatchesReferenceTokens) {
  const torch::Tensor expected = LoadReferenceTensor("tokens.safetensors", "tokens");
  ASSERT_TRUE(expected.defined());
  const auto texts = texts_["texts"].get<std::vector<std::string>>();
  ASSERT_EQ(expected.size(0), static_cast<int64_t>(texts.size()));
  ASSERT_EQ(expected.size(1), kContext);
  ExpectTokenRowsMatch(tokenizer_->Tokenize(texts), expected, texts);
}

TEST_F(ClipTokenizerTest, MatchesReferenceBpePieces) {
  const auto& pieces = texts_["bpe_pieces"];
  ASSERT_EQ(pieces.size(), 12u);
  for (auto it = pieces.begin(); it != pieces.end(); ++it) {
    EXPECT_EQ(tokenizer_->BpePieces(it.key()), it.value().get<std::vector<std::string>>())
        << it.key();
  }
}

TEST_F(ClipTokenizerTest, GoldenVectors) {
  EXPECT_EQ(Tokens("a diagram"), Row({49406, 320, 22697, 49407}));
  EXPECT_EQ(Tokens("a dog"), Row({49406, 320, 1929, 49407}));
  EXPECT_EQ(Tokens("a cat"), Row({49406, 320, 2368, 49407}));
  EXPECT_EQ(Tokens("Hello, World!  It's   a TEST."),
            Row({49406, 3306, 267, 1002, 256, 585, 568, 320, 1628, 269, 49407}));
  EXPECT_EQ(Tokens("a photo of a tench."),
            Row({49406, 320, 1125, 539, 320, 1149, 634, 269, 49407}));
  EXPECT_EQ(Tokens("don't stop 1234 caf\u00E9"),
            Row({49406, 847, 713, 1691, 272, 273, 274, 275, 15304, 49407}));
  EXPECT_EQ(Tokens("<start_of_text>hi"), Row({49406, 49406, 1883, 49407}));
  std::string words;
  for (int i = 0; i < 100; ++i) words += "word ";
  std::vector<int64_t> truncated(kContext, 2653);
  truncated.front() = 49406;
  truncated.back() = 49407;
  EXPECT_EQ(Tokens(words), truncated);
}

TEST_F(ClipTokenizerTest, SpecialTokensInTextAreCaseInsensitive) {
  // The text is lower-cased before the regex matches it.
  EXPECT_EQ(Tokens("<END_OF_TEXT>"), Row({49406, 49407, 49407}));
  EXPECT_EQ(tokenizer_->Encode("x<end_of_text>"),
            (std::vector<int32_t>{tokenizer_->Encode("x")[0], ClipTokenizer::kEndOfText}));
}

TEST_F(ClipTokenizerTest, TruncationKeepsEndOfTextLast) {
  auto repeat = [](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "word ";
    return s;
  };
  // 75 content ids fit exactly; 76 lose the last one; 74 leave one pad.
  const std::vector<int64_t> fits = Tokens(repeat(75));
  EXPECT_EQ(fits[0], 49406);
  EXPECT_EQ(fits[75], 2653);
  EXPECT_EQ(fits[76], 49407);
  EXPECT_EQ(Tokens(repeat(76)), fits);
  const std::vector<int64_t> short_row = Tokens(repeat(74));
  EXPECT_EQ(short_row[75], 49407);
  EXPECT_EQ(short_row[76], 0);

  auto small = ClipTokenizer::FromBpeGzip(ReferencePath("bpe_simple_vocab_16e6.txt.gz"), 5);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ((*small)->Tokenize({"a dog a cat a"}),
            (std::vector<int64_t>{49406, 320, 1929, 320, 49407}));
  EXPECT_EQ((*small)->Tokenize({"a dog"}), (std::vector<int64_t>{49406, 320, 1929, 49407, 0}));
}

TEST_F(ClipTokenizerTest, EmptyAndWhitespaceOnlyTexts) {
  EXPECT_EQ(Tokens(""), Row({49406, 49407}));
  EXPECT_EQ(Tokens(" \t\n\u3000 "), Row({49406, 49407}));
  EXPECT_TRUE(tokenizer_->Tokenize({}).empty());
}

TEST_F(ClipTokenizerTest, InvalidUtf8NeverFails) {
  const std::vector<int64_t> row = Tokens("\xFF\xFE dog \xC3 \xED\xA0\x80 cat \xF4\x90\x80\x80");
  EXPECT_EQ(row[0], 49406);
  // Invalid bytes read as U+FFFD, as Python's decode(errors="replace") does.
  EXPECT_EQ(row, Tokens("\uFFFD\uFFFD dog \uFFFD \uFFFD\uFFFD\uFFFD cat \uFFFD\uFFFD\uFFFD\uFFFD"));
  for (int64_t id : row) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, tokenizer_->vocab_size());
  }
}

TEST_F(ClipTokenizerTest, VeryLongText) {
  std::string text;
  while (text.size() < (10u << 20)) text += "word ";
  std::vector<int64_t> expected(kContext, 2653);
  expected.front() = 49406;
  expected.back() = 49407;
  EXPECT_EQ(Tokens(text), expected);
  // One 10 MB "word" of a single repeated letter.
  const std::vector<int64_t> row = Tokens(std::string(10u << 20, 'a'));
  EXPECT_EQ(row.front(), 49406);
  EXPECT_EQ(row.back(), 49407);
}

TEST_F(ClipTokenizerTest, DecodeMapsBytesBackAndWordEndsToSpaces) {
  auto ids = [&](const std::string& text) {
    std::vector<int64_t> out;
    for (int32_t id : tokenizer_->Encode(text)) out.push_back(id);
    return out;
  };
  EXPECT_EQ(tokenizer_->Decode(ids("a photo of a tench.")), "a photo of a tench . ");
  EXPECT_EQ(tokenizer_->Decode(ids("caf\u00E9 \u4E2D\u6587")), "caf\u00E9 \u4E2D\u6587 ");
  EXPECT_EQ(tokenizer_->Decode({49406, 320, 49407}), "<start_of_text>a <end_of_text>");
  // A lone continuation byte decodes to U+FFFD; ids out of range are skipped.
  int64_t byte_a9 = 0;
  while (BytesInTableOrder()[byte_a9] != 0xA9) ++byte_a9;
  EXPECT_EQ(tokenizer_->Decode({byte_a9}), "\uFFFD");
  EXPECT_EQ(tokenizer_->Decode({-1, 49408}), "");
}

TEST_F(ClipTokenizerTest, ConcurrentTokenizeIsConsistent) {
  const auto texts = texts_["texts"].get<std::vector<std::string>>();
  const std::vector<int64_t> expected = tokenizer_->Tokenize(texts);
  std::vector<std::vector<int64_t>> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) results[t] = tokenizer_->Tokenize(texts);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_EQ(result, expected);
}

// The same vocabulary as an HF vocab.json + merges.txt pair gives the same ids.
TEST_F(ClipTokenizerTest, HfFilesGiveIdenticalIds) {
  const std::string gz = GunzipReference(ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
  ASSERT_FALSE(gz.empty());
  auto merges = ParseMerges(gz, "gz", /*skip_first_line=*/true, ClipTokenizer::kNumMerges);
  ASSERT_TRUE(merges.ok()) << merges.status();
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (uint8_t byte : BytesInTableOrder()) vocab[std::string(ByteToUnicodeUtf8(byte))] = id++;
  for (uint8_t byte : BytesInTableOrder()) {
    vocab[std::string(ByteToUnicodeUtf8(byte)) + "</w>"] = id++;
  }
  std::string merges_txt = "#version: 0.2\n";
  for (const auto& [left, right] : *merges) {
    vocab[left + right] = id++;
    merges_txt += left + " " + right + "\n";
  }
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  ASSERT_EQ(id, ClipTokenizer::kVocabSize);

  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("oclip_clip_hf_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "vocab.json") << vocab.dump();
  std::ofstream(dir / "merges.txt") << merges_txt;
  auto hf =
      ClipTokenizer::FromHfFiles((dir / "vocab.json").string(), (dir / "merges.txt").string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_EQ((*hf)->vocab_size(), ClipTokenizer::kVocabSize);
  auto texts = texts_["texts"].get<std::vector<std::string>>();
  texts.push_back("Hello, World!  It's   a TEST. <start_of_text> 1234 caf\u00E9");
  EXPECT_EQ((*hf)->Tokenize(texts), tokenizer_->Tokenize(texts));
}

// The heap merge used for long words gives the scan's result.
TEST_F(ClipTokenizerTest, HeapMergeEqualsScanMerge) {
  const std::string gz = GunzipReference(ReferencePath("bpe_simple_vocab_16e6.txt.gz"));
  auto merges = ParseMerges(gz, "gz", /*skip_first_line=*/true, ClipTokenizer::kNumMerges);
  ASSERT_TRUE(merges.ok()) << merges.status();
  absl::flat_hash_map<std::string, int32_t> vocab;
  int32_t id = 0;
  for (uint8_t byte : BytesInTableOrder()) vocab[std::string(ByteToUnicodeUtf8(byte))] = id++;
  for (uint8_t byte : BytesInTableOrder()) {
    vocab[std::string(ByteToUnicodeUtf8(byte)) + "</w>"] = id++;
  }
  for (const auto& [left, right] : *merges) vocab[left + right] = id++;
  BytePairEncoder::Options scan_options;
  scan_options.end_of_word_suffix = "</w>";
  scan_options.heap_merge_threshold = 1 << 30;
  scan_options.cache_capacity = 0;
  BytePairEncoder::Options heap_options = scan_options;
  heap_options.heap_merge_threshold = 0;
  auto scan = BytePairEncoder::Create(vocab, *merges, scan_options);
  auto heap = BytePairEncoder::Create(vocab, *merges, heap_options);
  ASSERT_TRUE(scan.ok() && heap.ok());
  std::mt19937 rng(7);
  const std::string alphabet = "aaaabcdeeeefghiiijklmnooopqrstuuuvwxyz";
  for (int i = 0; i < 2000; ++i) {
    std::string word;
    const int length = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < length; ++k) word += alphabet[rng() % alphabet.size()];
    if (i % 10 == 0) word = std::string(length, 'a');
    EXPECT_EQ((*heap)->Pieces(word), (*scan)->Pieces(word)) << word;
  }
  EXPECT_EQ((*scan)->Pieces("diagram"), (std::vector<std::string>{"diagram</w>"}));
}

TEST(ClipTokenizerErrorsTest, ReportsMissingAndCorruptFiles) {
  EXPECT_EQ(ClipTokenizer::FromBpeGzip("/nonexistent/bpe.txt.gz").status().code(),
            absl::StatusCode::kNotFound);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("oclip_clip_err_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string plain = (dir / "plain.txt.gz").string();
  std::ofstream(plain) << "not gzip at all\n";
  EXPECT_EQ(ClipTokenizer::FromBpeGzip(plain).status().code(), absl::StatusCode::kDataLoss);
  // A gzip stream cut in half.
  const std::string gz = ReadFileToString(ReferencePath("bpe_simple_vocab_16e6.txt.gz")).value();
  const std::string truncated = (dir / "truncated.txt.gz").string();
  std::ofstream(truncated, std::ios::binary) << gz.substr(0, gz.size() / 2);
  EXPECT_EQ(ClipTokenizer::FromBpeGzip(truncated).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(
      ClipTokenizer::FromBpeGzip(ReferencePath("bpe_simple_vocab_16e6.txt.gz"), 0).status().code(),
      absl::StatusCode::kInvalidArgument);
  const std::string bad_json = (dir / "vocab.json").string();
  std::ofstream(bad_json) << "{not json";
  std::ofstream(dir / "merges.txt") << "#version: 0.2\na b\n";
  EXPECT_EQ(ClipTokenizer::FromHfFiles(bad_json, (dir / "merges.txt").string()).status().code(),
            absl::StatusCode::kDataLoss);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace oclip
