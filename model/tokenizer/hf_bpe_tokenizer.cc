#include "model/tokenizer/hf_bpe_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "model/tokenizer/text_cleaning.h"

namespace oclip {
namespace {

bool IsSpaceAt(absl::string_view text, size_t i, size_t* next) {
  *next = i;
  return NextCharClass(text, next) == CharClass::kSpace;
}

// The end of the run of `cls` characters starting at `i`.
size_t RunEnd(absl::string_view text, size_t i, CharClass cls) {
  while (i < text.size()) {
    size_t after = i;
    if (NextCharClass(text, &after) != cls) break;
    i = after;
  }
  return i;
}

// One match of GPT-2's pre-tokenizer regex at `*i`; false at the end.
bool NextPreToken(absl::string_view text, size_t* i, absl::string_view* token) {
  static constexpr absl::string_view kContractions[] = {"'s", "'t",  "'re", "'ve",
                                                        "'m", "'ll", "'d"};
  const size_t start = *i;
  if (start >= text.size()) return false;
  if (text[start] == '\'') {
    for (absl::string_view contraction : kContractions) {
      if (text.substr(start, contraction.size()) == contraction) {
        *i = start + contraction.size();
        *token = contraction;
        return true;
      }
    }
  }
  // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`
  const size_t body = text[start] == ' ' ? start + 1 : start;
  if (body < text.size()) {
    size_t after = body;
    const CharClass cls = NextCharClass(text, &after);
    if (cls != CharClass::kSpace) {
      *i = RunEnd(text, after, cls);
      *token = text.substr(start, *i - start);
      return true;
    }
  }
  // `\s+(?!\S)|\s+`: a whitespace run; if text follows it, its last character
  // is left to prefix the next token (unless the run is one character).
  size_t end = start;
  size_t last = start;
  size_t next;
  while (end < text.size() && IsSpaceAt(text, end, &next)) {
    last = end;
    end = next;
  }
  if (end < text.size() && last > start) end = last;
  *i = end;
  *token = text.substr(start, end - start);
  return true;
}

// Python's str.rstrip() length of text.
size_t RightStrippedSize(absl::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    size_t next = start;
    if (NextCharClass(text, &next) != CharClass::kSpace) break;
    end = start;
  }
  return end;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::FromFiles(
    const std::string& vocab_json, const std::string& merges_txt, int context_length) {
  if (context_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length must be at least 2, got ", context_length));
  }
  OCLIP_ASSIGN_OR_RETURN(const std::string json, ReadFileToString(vocab_json));
  OCLIP_ASSIGN_OR_RETURN(const auto vocab, ParseVocabJson(json, vocab_json));
  OCLIP_ASSIGN_OR_RETURN(const std::string merges_text, ReadFileToString(merges_txt));
  OCLIP_ASSIGN_OR_RETURN(const auto merges,
                         ParseMerges(merges_text, merges_txt, /*skip_first_line=*/false));
  std::unique_ptr<HfBpeTokenizer> tokenizer(new HfBpeTokenizer());
  tokenizer->context_length_ = context_length;
  for (const auto& [piece, id] : vocab) {
    tokenizer->vocab_size_ = std::max(tokenizer->vocab_size_, id + 1);
  }
  struct Named {
    const char* text;
    int32_t* id;
    bool strip_left;
  };
  const Named named[] = {{"<s>", &tokenizer->bos_id_, false},
                         {"<pad>", &tokenizer->pad_id_, false},
                         {"</s>", &tokenizer->eos_id_, false},
                         {"<unk>", &tokenizer->unk_id_, false},
                         {"<mask>", &tokenizer->mask_id_, true}};
  for (const Named& n : named) {
    auto it = vocab.find(n.text);
    if (it == vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_json, ": no id for the special token ", n.text));
    }
    *n.id = it->second;
    tokenizer->specials_.push_back({n.text, it->second, n.strip_left});
  }
  BytePairEncoder::Options options;
  options.unknown_id = tokenizer->unk_id_;
  OCLIP_ASSIGN_OR_RETURN(tokenizer->bpe_, BytePairEncoder::Create(vocab, merges, options));
  return tokenizer;
}

void HfBpeTokenizer::EncodeChunk(absl::string_view chunk, size_t limit,
                                 std::vector<int32_t>* ids) const {
  size_t i = 0;
  absl::string_view token;
  while (ids->size() < limit && NextPreToken(chunk, &i, &token)) bpe_->Encode(token, ids);
}

void HfBpeTokenizer::EncodeInto(absl::string_view text, size_t limit,
                                std::vector<int32_t>* ids) const {
  const std::string cleaned = CleanWhitespace(text);
  const absl::string_view rest_all(cleaned);
  size_t chunk_start = 0;
  size_t i = 0;
  while (i < rest_all.size() && ids->size() < limit) {
    const size_t at = rest_all.find('<', i);
    if (at == absl::string_view::npos) break;
    const Special* found = nullptr;
    for (const Special& special : specials_) {
      if (rest_all.substr(at, special.text.size()) == special.text) {
        found = &special;
        break;
      }
    }
    if (found == nullptr) {
      i = at + 1;
      continue;
    }
    absl::string_view before = rest_all.substr(chunk_start, at - chunk_start);
    if (found->strip_left) before = before.substr(0, RightStrippedSize(before));
    EncodeChunk(before, limit, ids);
    if (ids->size() < limit) ids->push_back(found->id);
    i = chunk_start = at + found->text.size();
  }
  EncodeChunk(rest_all.substr(chunk_start), limit, ids);
}

std::vector<int32_t> HfBpeTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  EncodeInto(text, static_cast<size_t>(-1), &ids);
  return ids;
}

std::vector<int64_t> HfBpeTokenizer::Tokenize(absl::Span<const std::string> texts) const {
  const size_t width = static_cast<size_t>(context_length_);
  std::vector<int64_t> rows(texts.size() * width, pad_id_);
  std::vector<int32_t> ids;
  for (size_t r = 0; r < texts.size(); ++r) {
    ids.clear();
    EncodeInto(texts[r], width - 2, &ids);
    int64_t* row = rows.data() + r * width;
    const size_t kept = std::min(ids.size(), width - 2);
    row[0] = bos_id_;
    std::copy(ids.begin(), ids.begin() + kept, row + 1);
    row[kept + 1] = eos_id_;
  }
  return rows;
}

}  // namespace oclip
