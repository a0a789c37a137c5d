// RoBERTa's byte-level BPE tokenizer (GPT-2 style), as OpenCLIP's HFTokenizer
// drives HF's RobertaTokenizer for the `roberta-*` text towers.
//
// Per text: OpenCLIP's 'whitespace' cleaning (text_cleaning.h: ftfy, HTML
// unescape twice, whitespace collapse; no lower-casing); the special-token
// strings (<s>, </s>, <unk>, <pad>, <mask>) split the text and become their ids
// (<mask> also swallows the whitespace before it, HF's lstrip); every other
// chunk is pre-tokenized with GPT-2's regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// and BPE-encoded without an end-of-word suffix; pieces missing from the
// vocabulary become <unk>. A row is <s> ids </s>, the ids truncated to
// context_length - 2, padded with <pad>.
//
// Errors: FromFiles returns NOT_FOUND for a missing file, DATA_LOSS for bad
// JSON or merges, INVALID_ARGUMENT if vocab.json lacks a special token or
// context_length < 2. Tokenize never fails. Thread safety: const methods may
// be called concurrently.

#ifndef OCLIP_MODEL_TOKENIZER_HF_BPE_TOKENIZER_H_
#define OCLIP_MODEL_TOKENIZER_HF_BPE_TOKENIZER_H_

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

class HfBpeTokenizer : public Tokenizer {
 public:
  // `vocab_json` / `merges_txt`: the files of an HF RoBERTa / GPT-2 tokenizer
  // folder.
  static absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> FromFiles(const std::string& vocab_json,
                                                                   const std::string& merges_txt,
                                                                   int context_length = 77);

  std::vector<int64_t> Tokenize(absl::Span<const std::string> texts) const override;
  int context_length() const override { return context_length_; }
  int vocab_size() const override { return vocab_size_; }

  // Ids of one text without <s> / </s>, untruncated.
  std::vector<int32_t> Encode(absl::string_view text) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t mask_id() const { return mask_id_; }

 private:
  struct Special {
    std::string text;
    int32_t id;
    bool strip_left;
  };

  HfBpeTokenizer() = default;

  // Appends the ids of `text` (cleaned here), stopping once `ids` holds
  // `limit` ids.
  void EncodeInto(absl::string_view text, size_t limit, std::vector<int32_t>* ids) const;
  // BPE of one chunk without special tokens.
  void EncodeChunk(absl::string_view chunk, size_t limit, std::vector<int32_t>* ids) const;

  std::unique_ptr<BytePairEncoder> bpe_;
  std::vector<Special> specials_;
  int context_length_ = 77;
  int vocab_size_ = 0;
  int32_t bos_id_ = 0;
  int32_t eos_id_ = 2;
  int32_t pad_id_ = 1;
  int32_t unk_id_ = 3;
  int32_t mask_id_ = 4;
};

}  // namespace oclip

#endif  // OCLIP_MODEL_TOKENIZER_HF_BPE_TOKENIZER_H_
