// The interface shared by oclip's tokenizers: text in, OpenCLIP's token id
// rows out.
//
// Implementations: the CLIP BPE tokenizer (clip_tokenizer.h, native text
// towers), the RoBERTa byte-level BPE tokenizer (hf_bpe_tokenizer.h) and the
// XLM-RoBERTa SentencePiece tokenizer (sentencepiece_tokenizer.h). Each one
// cleans the text as OpenCLIP does for its kind, then truncates and pads every
// row to context_length() exactly as OpenCLIP's Python tokenizer does.
//
// Thread safety: Tokenize() is const and safe to call from many threads.

#ifndef OCLIP_MODEL_TOKENIZER_TOKENIZER_H_
#define OCLIP_MODEL_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace oclip {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Row-major ids [texts.size(), context_length()]. Never fails: any UTF-8
  // (invalid bytes included) tokenizes to something.
  virtual std::vector<int64_t> Tokenize(absl::Span<const std::string> texts) const = 0;

  virtual int context_length() const = 0;
  // Number of ids (embedding rows the text tower needs).
  virtual int vocab_size() const = 0;
};

}  // namespace oclip

#endif  // OCLIP_MODEL_TOKENIZER_TOKENIZER_H_
