// Tests of model/tokenizer/sentencepiece_tokenizer.h against the ids HF's
// XLMRobertaTokenizer produced for shared/reference/hf/texts.json.
#include "tests/core/scratch_dir.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/model/reference.h"

namespace oclip {
namespace {

using ::oclip::testing::ScratchPath;

using ::oclip::testing::LoadReferenceTensor;
using ::oclip::testing::ReferencePath;

constexpr char kModel[] = "hf/tiny-xlmr-tokenizer/sentencepiece.bpe.model";

nlohmann::json ReadJson(const std::string& relative) {
  std::ifstream in(ReferencePath(relative));
  return nlohmann::json::parse(in);
}

std::vector<std::string> ReferenceTexts() {
  return ReadJson("hf/texts.json").at("texts").get<std::vector<std::string>>();
}

std::unique_ptr<SentencePieceTokenizer> LoadTokenizer(int context_length = 77) {
  auto tokenizer = SentencePieceTokenizer::FromModelFile(ReferencePath(kModel), context_length);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

std::string TempFile(const std::string& name, const std::string& bytes) {
  std::string path = ScratchPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(SentencePieceTokenizerTest, MatchesHuggingFaceIds) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<std::string> texts = ReferenceTexts();
  torch::Tensor expected =
      LoadReferenceTensor("hf/tiny-xlm-roberta-vit.expected.safetensors", "tokens");
  ASSERT_TRUE(expected.defined());
  ASSERT_EQ(expected.size(0), static_cast<int64_t>(texts.size()));
  ASSERT_EQ(expected.size(1), tokenizer->context_length());

  std::vector<int64_t> ids = tokenizer->Tokenize(texts);
  ASSERT_EQ(ids.size(), texts.size() * tokenizer->context_length());
  torch::Tensor actual = torch::from_blob(ids.data(), expected.sizes(), torch::kInt64);
  for (int64_t i = 0; i < expected.size(0); ++i) {
    EXPECT_TRUE(torch::equal(actual[i], expected[i].to(torch::kInt64)))
        << "text " << i << " '" << texts[i] << "'\n  actual   " << actual[i] << "\n  expected "
        << expected[i];
  }
}

TEST(SentencePieceTokenizerTest, VocabularyMatchesTheHfConfig) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const int hf_vocab = ReadJson("hf/tiny-xlm-roberta-vit.json")["hf_config"]["vocab_size"];
  EXPECT_EQ(tokenizer->vocab_size(), hf_vocab);
  EXPECT_EQ(tokenizer->mask_id(), hf_vocab - 1);
}

TEST(SentencePieceTokenizerTest, EmptyTextIsStartEndAndPadding) {
  auto tokenizer = LoadTokenizer(6);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Tokenize({std::string()}), (std::vector<int64_t>{0, 2, 1, 1, 1, 1}));
  EXPECT_EQ(tokenizer->Tokenize({std::string(" \t\n ")}), (std::vector<int64_t>{0, 2, 1, 1, 1, 1}));
}

TEST(SentencePieceTokenizerTest, TruncationKeepsTheEndToken) {
  auto tokenizer = LoadTokenizer(5);
  ASSERT_NE(tokenizer, nullptr);
  const std::string text = "word1 word2 word3 word4 word5";
  std::vector<int64_t> all = tokenizer->EncodeIds(text);
  ASSERT_GT(all.size(), 3u);
  EXPECT_EQ(tokenizer->Tokenize({text}), (std::vector<int64_t>{0, all[0], all[1], all[2], 2}));
}

TEST(SentencePieceTokenizerTest, UnknownCharactersMapToUnk) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  std::vector<int64_t> ids = tokenizer->EncodeIds("\xe2\x98\x83");  // a snowman
  ASSERT_FALSE(ids.empty());
  EXPECT_NE(std::find(ids.begin(), ids.end(), SentencePieceTokenizer::kUnkId), ids.end());
  for (int64_t id : ids) {
    EXPECT_GE(id, SentencePieceTokenizer::kUnkId);
    EXPECT_LT(id, tokenizer->mask_id());
  }
}

TEST(SentencePieceTokenizerTest, SpecialTokensInTextAreRecognized) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int64_t> a = tokenizer->EncodeIds("a dog");
  const std::vector<int64_t> b = tokenizer->EncodeIds("a cat");
  std::vector<int64_t> expected = a;
  expected.push_back(tokenizer->mask_id());
  expected.insert(expected.end(), b.begin(), b.end());
  EXPECT_EQ(tokenizer->EncodeIds("a dog <mask> a cat"), expected);
  expected = a;
  expected.push_back(SentencePieceTokenizer::kEosId);
  expected.insert(expected.end(), b.begin(), b.end());
  EXPECT_EQ(tokenizer->EncodeIds("a dog</s>a cat"), expected);
}

TEST(SentencePieceTokenizerTest, TokenizeIsThreadSafe) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<std::string> texts = ReferenceTexts();
  const std::vector<int64_t> expected = tokenizer->Tokenize(texts);
  std::vector<std::vector<int64_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) {
    threads.emplace_back([&tokenizer, &texts, &result] {
      for (int i = 0; i < 20; ++i) result = tokenizer->Tokenize(texts);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_EQ(result, expected);
}

TEST(SentencePieceTokenizerTest, NormalizesWithThePrecompiledCharsMap) {
  auto tokenizer = LoadTokenizer();
  ASSERT_NE(tokenizer, nullptr);
  // nmt_nfkc: full-width letters, the ideographic space and the "fi" ligature
  // fold to ASCII; runs of spaces collapse; spaces become U+2581.
  EXPECT_EQ(tokenizer->Normalize("\xef\xbc\xa1\xef\xbc\xa2"
                                 "C\xe3\x80\x80\xef\xac\x81  x "),
            "\xe2\x96\x81"
            "ABC\xe2\x96\x81"
            "fi\xe2\x96\x81x");
  EXPECT_EQ(tokenizer->Normalize("   "), "");
}

// ---------------------------------------------------------------------------
// Hand-built models for the parts of SentencePiece the fixture does not use.

std::string Varint(uint64_t value) {
  std::string out;
  do {
    uint8_t byte = value & 0x7f;
    value >>= 7;
    out.push_back(static_cast<char>(byte | (value ? 0x80 : 0)));
  } while (value);
  return out;
}

std::string BytesField(int field, const std::string& bytes) {
  return Varint(field << 3 | 2) + Varint(bytes.size()) + bytes;
}

std::string VarintField(int field, uint64_t value) { return Varint(field << 3) + Varint(value); }

std::string FloatField(int field, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  std::string out = Varint(field << 3 | 5);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
  return out;
}

enum PieceType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

std::string Piece(const std::string& text, float score, PieceType type = kNormal) {
  return BytesField(1, BytesField(1, text) + FloatField(2, score) + VarintField(3, type));
}

struct ModelOptions {
  bool byte_fallback = false;
  bool add_dummy_prefix = true;
  int model_type = 1;
};

// spm ids: 0 <unk>, 1 <s>, 2 </s>, 3 "▁a", 4 "b", 5 "▁ab", 6 "▁", 7 "a",
// 8 "<x>" (user-defined), 9 "▁abb" (unused), then <0x00>..<0xFF> if
// byte_fallback.
std::string HandBuiltModel(const ModelOptions& options) {
  std::string model = Piece("<unk>", 0, kUnknown) + Piece("<s>", 0, kControl) +
                      Piece("</s>", 0, kControl) +
                      Piece(
                          "\xe2\x96\x81"
                          "a",
                          -1) +
                      Piece("b", -1) +
                      Piece(
                          "\xe2\x96\x81"
                          "ab",
                          -3) +
                      Piece("\xe2\x96\x81", -2) + Piece("a", -2) + Piece("<x>", 0, kUserDefined) +
                      Piece(
                          "\xe2\x96\x81"
                          "abb",
                          10, kUnused);
  if (options.byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      model += Piece(name, 0, kByte);
    }
  }
  model += BytesField(
      2, VarintField(3, options.model_type) + VarintField(35, options.byte_fallback ? 1 : 0));
  model += BytesField(3, VarintField(3, options.add_dummy_prefix ? 1 : 0));
  return model;
}

std::unique_ptr<SentencePieceTokenizer> LoadHandBuilt(const ModelOptions& options) {
  auto tokenizer =
      SentencePieceTokenizer::FromModelFile(TempFile("hand.model", HandBuiltModel(options)));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

// HF ids are SentencePiece ids + 1 (<unk> -> 3).
std::vector<int64_t> Hf(std::vector<int64_t> spm_ids) {
  for (int64_t& id : spm_ids) id = id == 0 ? 3 : id + 1;
  return spm_ids;
}

TEST(SentencePieceTokenizerTest, ViterbiPicksTheBestSegmentation) {
  auto tokenizer = LoadHandBuilt({});
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->vocab_size(), 12);
  EXPECT_EQ(tokenizer->EncodeIds("ab"), Hf({3, 4}));           // -2 beats "▁ab" (-3)
  EXPECT_EQ(tokenizer->EncodeIds("abb"), Hf({3, 4, 4}));       // unused "▁abb" is skipped
  EXPECT_EQ(tokenizer->EncodeIds("  a   b "), Hf({3, 6, 4}));  // extra spaces removed
  EXPECT_EQ(tokenizer->EncodeIds("a<x>b"), Hf({3, 8, 4}));     // user-defined kept whole
}

TEST(SentencePieceTokenizerTest, RunsOfUnknownCharactersMergeIntoOneUnk) {
  auto tokenizer = LoadHandBuilt({});
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->EncodeIds("zz\xc3\xa9"), Hf({6, 0}));
  EXPECT_EQ(tokenizer->EncodeIds("azb"), Hf({3, 0, 4}));
}

TEST(SentencePieceTokenizerTest, ByteFallbackSpellsUnknownCharactersAsBytes) {
  ModelOptions options;
  options.byte_fallback = true;
  auto tokenizer = LoadHandBuilt(options);
  ASSERT_NE(tokenizer, nullptr);
  const int64_t kFirstByte = 10;  // spm id of <0x00>
  EXPECT_EQ(tokenizer->EncodeIds("z\xc3\xa9"),
            Hf({6, kFirstByte + 'z', kFirstByte + 0xc3, kFirstByte + 0xa9}));
}

TEST(SentencePieceTokenizerTest, WithoutDummyPrefix) {
  ModelOptions options;
  options.add_dummy_prefix = false;
  auto tokenizer = LoadHandBuilt(options);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->EncodeIds("ab"), Hf({7, 4}));
  EXPECT_EQ(tokenizer->EncodeIds("b ab"), Hf({4, 3, 4}));
}

TEST(SentencePieceTokenizerTest, RejectsUnsupportedOrInconsistentModels) {
  ModelOptions bpe;
  bpe.model_type = 2;
  auto tokenizer =
      SentencePieceTokenizer::FromModelFile(TempFile("bpe.model", HandBuiltModel(bpe)));
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tokenizer.status().message().find("unigram"), absl::string_view::npos);

  const std::string no_unk = Piece("a", -1) + Piece("b", -1);
  tokenizer = SentencePieceTokenizer::FromModelFile(TempFile("nounk.model", no_unk));
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);

  const std::string duplicate = Piece("<unk>", 0, kUnknown) + Piece("a", -1) + Piece("a", -2);
  tokenizer = SentencePieceTokenizer::FromModelFile(TempFile("dup.model", duplicate));
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);

  // Byte fallback switched on by a second TrainerSpec (proto merge semantics).
  std::string missing_bytes = HandBuiltModel({}) + BytesField(2, VarintField(35, 1));
  tokenizer = SentencePieceTokenizer::FromModelFile(TempFile("nobytes.model", missing_bytes));
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SentencePieceTokenizerTest, MissingFileIsNotFound) {
  auto tokenizer = SentencePieceTokenizer::FromModelFile(ScratchPath("nope.model"));
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound) << tokenizer.status();
}

TEST(SentencePieceTokenizerTest, CorruptFilesAreInvalidArgument) {
  for (const std::string& bytes :
       {std::string(), std::string("not a model\n"), std::string(1000, '\xff'),
        std::string("\x0a\x05hello\x12\x03"
                    "abc",
                    12)}) {
    auto tokenizer = SentencePieceTokenizer::FromModelFile(TempFile("bad.model", bytes));
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << tokenizer.status();
  }
}

TEST(SentencePieceTokenizerTest, RejectsTinyContextLength) {
  auto tokenizer = SentencePieceTokenizer::FromModelFile(ReferencePath(kModel), 1);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
