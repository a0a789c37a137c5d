// Client text through the Hugging Face byte-level BPE tokenizer (RoBERTa
// text towers), with the tiny RoBERTa vocabulary of shared/reference/hf.
#include <memory>
#include <string>

#include "model/tokenizer/hf_bpe_tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(hf_bpe_tokenizer) {
  static const oclip::HfBpeTokenizer* tokenizer = [] {
    auto loaded = oclip::HfBpeTokenizer::FromFiles(
        oclip::fuzz::ReferenceFile("hf/tiny-roberta-tokenizer/vocab.json"),
        oclip::fuzz::ReferenceFile("hf/tiny-roberta-tokenizer/merges.txt"), 77);
    OCLIP_FUZZ_CHECK(loaded.ok());
    return loaded->release();
  }();
  oclip::fuzz::TokenizeChecked(*tokenizer, data, size);
  return 0;
}
