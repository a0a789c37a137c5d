// Client text (EncodeText, Classify labels, captions) through the CLIP BPE
// tokenizer, including OpenCLIP's cleaning (ftfy's fixes, HTML unescaping,
// whitespace, lower-casing) on arbitrary, possibly invalid, UTF-8.
#include <memory>
#include <string>

#include "model/tokenizer/clip_tokenizer.h"
#include "model/tokenizer/text_cleaning.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(clip_tokenizer) {
  static const oclip::ClipTokenizer* tokenizer = [] {
    auto loaded = oclip::ClipTokenizer::FromBpeGzip(
        oclip::fuzz::ReferenceFile("bpe_simple_vocab_16e6.txt.gz"), /*context_length=*/77);
    OCLIP_FUZZ_CHECK(loaded.ok());
    return loaded->release();
  }();
  const std::vector<int64_t> ids = oclip::fuzz::TokenizeChecked(*tokenizer, data, size);
  OCLIP_FUZZ_CHECK(ids[0] == oclip::ClipTokenizer::kStartOfText);
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string cleaned = oclip::CleanWhitespace(oclip::BasicClean(text));
  (void)tokenizer->Decode(ids);
  (void)cleaned;
  return 0;
}
