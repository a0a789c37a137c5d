// Client text through oclip's own SentencePiece (XLM-R) tokenizer: the
// precompiled-charsmap normalizer and the unigram Viterbi, with the tiny
// XLM-R model of shared/reference/hf.
#include <memory>
#include <string>

#include "model/tokenizer/sentencepiece_tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(sentencepiece_tokenizer) {
  static const oclip::SentencePieceTokenizer* tokenizer = [] {
    auto loaded = oclip::SentencePieceTokenizer::FromModelFile(
        oclip::fuzz::ReferenceFile("hf/tiny-xlmr-tokenizer/sentencepiece.bpe.model"), 77);
    OCLIP_FUZZ_CHECK(loaded.ok());
    return loaded->release();
  }();
  oclip::fuzz::TokenizeChecked(*tokenizer, data, size);
  (void)tokenizer->Normalize(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
