// CLIP's byte-level BPE tokenizer, as OpenCLIP's `SimpleTokenizer` (every
// native text tower: OpenAI, LAION, ...).
//
// Per text: OpenCLIP's 'lower' cleaning (text_cleaning.h: ftfy, HTML unescape
// twice, whitespace collapse, str.lower()), then OpenCLIP's pre-tokenizer
// regex (IGNORECASE)
//   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// then BPE with "</w>" marking each word's end (bpe.h). A pre-token that is
// exactly "<start_of_text>" / "<end_of_text>" becomes that special id. A row
// is [SOT] + ids + [EOT]; a longer one keeps its first context_length ids with
// the last overwritten by EOT; shorter rows are padded with 0.
//
// Vocabulary (49,408 ids): the 256 byte characters in GPT-2 table order, the
// same with "</w>", the results of the first 48,894 merges in rank order,
// <start_of_text> = 49406, <end_of_text> = 49407.
//
// Errors: the factories return NOT_FOUND for a missing file, DATA_LOSS for a
// corrupt gzip / JSON or a malformed merges line, INVALID_ARGUMENT for a
// vocabulary without the pieces CLIP needs or context_length < 2. Tokenize
// never fails. Thread safety: all const methods may be called concurrently.

#ifndef OCLIP_MODEL_TOKENIZER_CLIP_TOKENIZER_H_
#define OCLIP_MODEL_TOKENIZER_CLIP_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/tokenizer/bpe.h"
#include "model/tokenizer/tokenizer.h"

namespace oclip {

class ClipTokenizer : public Tokenizer {
 public:
  static constexpr int kNumMerges = 49152 - 256 - 2;
  static constexpr int kVocabSize = 49408;
  static constexpr int32_t kStartOfText = 49406;
  static constexpr int32_t kEndOfText = 49407;

  // Reads OpenCLIP's `bpe_simple_vocab_16e6.txt.gz` (header line, then merges;
  // only the first kNumMerges are used).
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> FromBpeGzip(const std::string& path,
                                                                    int context_length = 77);

  // Reads the same vocabulary as an HF `vocab.json` + `merges.txt` pair (e.g.
  // openai/clip-vit-base-patch32). Pieces keep their ids from vocab.json
  // (which must be dense); the special tokens may also be spelled HF's way,
  // "<|startoftext|>" / "<|endoftext|>". Every merge line (after an optional
  // "#version" header) is used. The pre-tokenizer stays OpenCLIP's.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> FromHfFiles(const std::string& vocab_json,
                                                                    const std::string& merges_txt,
                                                                    int context_length = 77);

  std::vector<int64_t> Tokenize(absl::Span<const std::string> texts) const override;
  int context_length() const override { return context_length_; }
  int vocab_size() const override { return vocab_size_; }

  // Ids of one text without SOT/EOT, untruncated.
  std::vector<int32_t> Encode(absl::string_view text) const;

  // The BPE pieces of one text (e.g. {"a</w>", "diagram</w>"}), without
  // SOT/EOT: OpenCLIP's `[decoder[i] for i in encode(text)]`.
  std::vector<std::string> BpePieces(absl::string_view text) const;

  // OpenCLIP's decode: pieces concatenated, byte characters back to bytes,
  // decoded as UTF-8 with U+FFFD for invalid sequences, "</w>" -> " ". Ids
  // outside the vocabulary are skipped.
  std::string Decode(absl::Span<const int64_t> ids) const;

 private:
  ClipTokenizer(std::unique_ptr<BytePairEncoder> bpe, std::vector<std::string> pieces,
                int context_length);

  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> Build(
      std::vector<std::string> pieces,
      const std::vector<std::pair<std::string, std::string>>& merges, int context_length);

  // Appends the ids of `text` (cleaned here) to `ids`; stops once `ids` holds
  // `limit` ids (the rest cannot survive truncation).
  void EncodeInto(absl::string_view text, size_t limit, std::vector<int32_t>* ids) const;

  std::unique_ptr<BytePairEncoder> bpe_;
  std::vector<std::string> pieces_;  // id -> piece
  int context_length_;
  int vocab_size_;
  int32_t start_of_text_;
  int32_t end_of_text_;
};

}  // namespace oclip

#endif  // OCLIP_MODEL_TOKENIZER_CLIP_TOKENIZER_H_
