// The XLM-RoBERTa tokenizer (xlm-roberta-base-ViT-B-32,
// xlm-roberta-large-ViT-H-14): a SentencePiece model with HF
// XLMRobertaTokenizer's fairseq id mapping.
//
// Ids: <s>=0, <pad>=1, </s>=2, <unk>=3; every other SentencePiece id i maps to
// i + 1 (SentencePiece's own <unk> maps to 3); <mask> is the last id
// (SentencePiece vocabulary size + 1). vocab_size() = SentencePiece size + 2.
// The literal strings "<s>", "<pad>", "</s>", "<unk>" and "<mask>" in a text
// are special tokens, as in HF (spaces before "<mask>" are dropped).
//
// Each text is cleaned as OpenCLIP's HF tokenizer wrapper does (ftfy fix,
// HTML unescape twice, runs of whitespace to one space, strip; no
// lower-casing), encoded, and laid out as `<s> ids </s>` truncated to
// context_length() (the ids are cut so that `</s>` stays last) and padded with
// <pad> = 1.
//
// The SentencePiece library is not used (Debian's libsentencepiece embeds a
// protobuf runtime that crashes next to LibTorch's): this file reads the
// .model protobuf itself and re-implements what SentencePiece 0.1.97+ does at
// encode time for unigram models: the normalizer (precompiled charsmap
// double-array trie, dummy prefix, extra-whitespace removal, whitespace as
// U+2581, user-defined symbols), the optimized Viterbi segmentation with its
// unknown-character penalty, and byte fallback.
//
// Errors: FromModelFile() returns NOT_FOUND for a missing file,
// INVALID_ARGUMENT for a file that is not a SentencePiece unigram model or a
// context_length below 2. Tokenize() never fails.
// Thread safety: immutable after construction; Tokenize() may run on many
// threads at once.

#ifndef OCLIP_MODEL_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
#define OCLIP_MODEL_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/tokenizer/tokenizer.h"

namespace oclip {

struct SentencePieceModel;  // the parsed model; defined in the .cc file

class SentencePieceTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kBosId = 0;  // <s>
  static constexpr int64_t kPadId = 1;  // <pad>
  static constexpr int64_t kEosId = 2;  // </s>
  static constexpr int64_t kUnkId = 3;  // <unk>

  // `path`: a `sentencepiece.bpe.model` as XLMRobertaTokenizer reads it.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> FromModelFile(
      const std::string& path, int context_length = 77);

  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;
  ~SentencePieceTokenizer() override;

  std::vector<int64_t> Tokenize(absl::Span<const std::string> texts) const override;
  int context_length() const override { return context_length_; }
  int vocab_size() const override { return vocab_size_; }
  int64_t mask_id() const { return vocab_size_ - 1; }

  // The ids of one already-cleaned text, without <s>, </s>, truncation or
  // padding.
  std::vector<int64_t> EncodeIds(const std::string& cleaned_text) const;

  // SentencePiece's normalized form of `text` (U+2581 for spaces), for tests.
  std::string Normalize(const std::string& text) const;

 private:
  SentencePieceTokenizer(std::unique_ptr<const SentencePieceModel> model, int context_length);

  // Appends the fairseq ids of text without special tokens.
  void EncodePlain(absl::string_view text, std::vector<int64_t>* ids) const;
  // Writes one row of context_length() ids.
  void FillRow(const std::string& text, int64_t* row) const;

  std::unique_ptr<const SentencePieceModel> model_;
  int context_length_;
  int vocab_size_;
};

}  // namespace oclip

#endif  // OCLIP_MODEL_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
