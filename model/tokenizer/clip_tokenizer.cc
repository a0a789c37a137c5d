#include "model/tokenizer/clip_tokenizer.h"

#include <zlib.h>

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "model/tokenizer/text_cleaning.h"

namespace oclip {
namespace {

constexpr char kSuffix[] = "</w>";
constexpr char kStartOfTextPiece[] = "<start_of_text>";
constexpr char kEndOfTextPiece[] = "<end_of_text>";
// HF's names for the same two tokens (openai/clip-vit-* tokenizer files).
constexpr char kHfStartOfTextPiece[] = "<|startoftext|>";
constexpr char kHfEndOfTextPiece[] = "<|endoftext|>";

absl::StatusOr<std::string> Gunzip(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  z_stream stream{};
  // 16 + MAX_WBITS: expect a gzip header.
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) {
    return absl::InternalError("zlib inflateInit2 failed");
  }
  stream.next_in = const_cast<Bytef*>(file->data());
  stream.avail_in = static_cast<uInt>(file->size());
  std::string out;
  char buffer[1 << 16];
  int result = Z_OK;
  do {
    stream.next_out = reinterpret_cast<Bytef*>(buffer);
    stream.avail_out = sizeof(buffer);
    result = inflate(&stream, Z_NO_FLUSH);
    if (result != Z_OK && result != Z_STREAM_END) break;
    out.append(buffer, sizeof(buffer) - stream.avail_out);
  } while (result != Z_STREAM_END);
  inflateEnd(&stream);
  if (result != Z_STREAM_END) {
    return absl::DataLossError(
        absl::StrCat(path, ": not a complete gzip stream (zlib error ", result, ")"));
  }
  return out;
}

// `<start_of_text>` etc. at text[i], matched as the regex does with
// IGNORECASE: ASCII letters in either case, and U+017F (long s) for 's' (the
// only non-ASCII case variant that survives lower-casing). Returns the length
// matched, 0 if none.
size_t MatchCaseless(absl::string_view text, size_t i, absl::string_view literal) {
  const size_t start = i;
  for (char want : literal) {
    if (i >= text.size()) return 0;
    const char have = text[i];
    if (have == want || (want >= 'a' && want <= 'z' && have == want - 32)) {
      ++i;
    } else if (want == 's' && have == '\xC5' && i + 1 < text.size() && text[i + 1] == '\xBF') {
      i += 2;
    } else {
      return 0;
    }
  }
  return i - start;
}

// One match of OpenCLIP's pre-tokenizer regex at or after `*i`; false at the
// end of the text.
bool NextPreToken(absl::string_view text, size_t* i, absl::string_view* token) {
  static constexpr absl::string_view kContractions[] = {"'s", "'t",  "'re", "'ve",
                                                        "'m", "'ll", "'d"};
  while (*i < text.size()) {
    const size_t start = *i;
    const char c = text[start];
    size_t length = 0;
    if (c == '<') {
      length = MatchCaseless(text, start, kStartOfTextPiece);
      if (length == 0) length = MatchCaseless(text, start, kEndOfTextPiece);
    } else if (c == '\'') {
      for (absl::string_view contraction : kContractions) {
        length = MatchCaseless(text, start, contraction);
        if (length != 0) break;
      }
    }
    if (length != 0) {
      *i = start + length;
      *token = text.substr(start, length);
      return true;
    }
    size_t end = start;
    const CharClass cls = NextCharClass(text, &end);
    if (cls == CharClass::kSpace) {
      *i = end;
      continue;
    }
    if (cls != CharClass::kNumber) {  // a run of letters, or of anything else
      size_t next = end;
      while (next < text.size()) {
        size_t after = next;
        if (NextCharClass(text, &after) != cls) break;
        next = after;
      }
      end = next;
    }
    *i = end;
    *token = text.substr(start, end - start);
    return true;
  }
  return false;
}

}  // namespace

ClipTokenizer::ClipTokenizer(std::unique_ptr<BytePairEncoder> bpe, std::vector<std::string> pieces,
                             int context_length)
    : bpe_(std::move(bpe)),
      pieces_(std::move(pieces)),
      context_length_(context_length),
      vocab_size_(static_cast<int>(pieces_.size())),
      start_of_text_(-1),
      end_of_text_(-1) {}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::Build(
    std::vector<std::string> pieces, const std::vector<std::pair<std::string, std::string>>& merges,
    int context_length) {
  if (context_length < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length must be at least 1, got ", context_length));
  }
  // Later duplicates win, as in OpenCLIP's dict(zip(vocab, range(len(vocab)))).
  absl::flat_hash_map<std::string, int32_t> vocab;
  vocab.reserve(pieces.size());
  for (size_t id = 0; id < pieces.size(); ++id) vocab[pieces[id]] = static_cast<int32_t>(id);
  auto special = [&](const char* name, const char* hf_name) -> int32_t {
    if (auto it = vocab.find(name); it != vocab.end()) return it->second;
    if (auto it = vocab.find(hf_name); it != vocab.end()) return it->second;
    return -1;
  };
  const int32_t start_of_text = special(kStartOfTextPiece, kHfStartOfTextPiece);
  const int32_t end_of_text = special(kEndOfTextPiece, kHfEndOfTextPiece);
  if (start_of_text < 0 || end_of_text < 0) {
    return absl::InvalidArgumentError(
        "the CLIP vocabulary has no <start_of_text> / <end_of_text> token");
  }
  BytePairEncoder::Options options;
  options.end_of_word_suffix = kSuffix;
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<BytePairEncoder> bpe,
                         BytePairEncoder::Create(vocab, merges, std::move(options)));
  std::unique_ptr<ClipTokenizer> tokenizer(
      new ClipTokenizer(std::move(bpe), std::move(pieces), context_length));
  tokenizer->start_of_text_ = start_of_text;
  tokenizer->end_of_text_ = end_of_text;
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::FromBpeGzip(const std::string& path,
                                                                          int context_length) {
  OCLIP_ASSIGN_OR_RETURN(const std::string text, Gunzip(path));
  OCLIP_ASSIGN_OR_RETURN(auto merges,
                         ParseMerges(text, path, /*skip_first_line=*/true, kNumMerges));
  if (merges.size() != static_cast<size_t>(kNumMerges)) {
    return absl::DataLossError(
        absl::StrCat(path, ": expected at least ", kNumMerges, " merges, found ", merges.size()));
  }
  std::vector<std::string> pieces;
  pieces.reserve(kVocabSize);
  for (uint8_t byte : BytesInTableOrder()) pieces.emplace_back(ByteToUnicodeUtf8(byte));
  for (int i = 0; i < 256; ++i) pieces.push_back(pieces[i] + kSuffix);
  for (const auto& [left, right] : merges) pieces.push_back(left + right);
  pieces.emplace_back(kStartOfTextPiece);
  pieces.emplace_back(kEndOfTextPiece);
  return Build(std::move(pieces), merges, context_length);
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::FromHfFiles(
    const std::string& vocab_json, const std::string& merges_txt, int context_length) {
  OCLIP_ASSIGN_OR_RETURN(const std::string json, ReadFileToString(vocab_json));
  OCLIP_ASSIGN_OR_RETURN(const auto vocab, ParseVocabJson(json, vocab_json));
  OCLIP_ASSIGN_OR_RETURN(const std::string merges_text, ReadFileToString(merges_txt));
  OCLIP_ASSIGN_OR_RETURN(auto merges,
                         ParseMerges(merges_text, merges_txt, /*skip_first_line=*/false));
  int32_t size = 0;
  for (const auto& [piece, id] : vocab) size = std::max(size, id + 1);
  // Vocabularies are dense; a stray huge id must not allocate gigabytes.
  if (static_cast<size_t>(size) > 2 * vocab.size() + 1024) {
    return absl::DataLossError(absl::StrCat(vocab_json, ": ids go up to ", size - 1, " for only ",
                                            vocab.size(), " pieces"));
  }
  std::vector<std::string> pieces(size);
  for (const auto& [piece, id] : vocab) pieces[id] = piece;
  return Build(std::move(pieces), merges, context_length);
}

void ClipTokenizer::EncodeInto(absl::string_view text, size_t limit,
                               std::vector<int32_t>* ids) const {
  const std::string cleaned = CleanLower(text);
  size_t i = 0;
  absl::string_view token;
  while (ids->size() < limit && NextPreToken(cleaned, &i, &token)) {
    if (token == kStartOfTextPiece) {
      ids->push_back(start_of_text_);
    } else if (token == kEndOfTextPiece) {
      ids->push_back(end_of_text_);
    } else {
      bpe_->Encode(token, ids);
    }
  }
}

std::vector<int32_t> ClipTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  EncodeInto(text, static_cast<size_t>(-1), &ids);
  return ids;
}

std::vector<int64_t> ClipTokenizer::Tokenize(absl::Span<const std::string> texts) const {
  const size_t width = static_cast<size_t>(context_length_);
  std::vector<int64_t> rows(texts.size() * width, 0);
  std::vector<int32_t> ids;
  for (size_t r = 0; r < texts.size(); ++r) {
    ids.clear();
    // With context_length - 1 content ids the row overflows; more cannot
    // change it.
    EncodeInto(texts[r], width - 1, &ids);
    int64_t* row = rows.data() + r * width;
    const size_t total = ids.size() + 2;
    const size_t kept = std::min(total, width);
    row[0] = start_of_text_;
    for (size_t k = 1; k < kept; ++k) row[k] = k - 1 < ids.size() ? ids[k - 1] : end_of_text_;
    if (total > width) row[width - 1] = end_of_text_;
  }
  return rows;
}

std::vector<std::string> ClipTokenizer::BpePieces(absl::string_view text) const {
  std::vector<std::string> pieces;
  for (int32_t id : Encode(text)) pieces.push_back(pieces_[id]);
  return pieces;
}

std::string ClipTokenizer::Decode(absl::Span<const int64_t> ids) const {
  std::string joined;
  for (int64_t id : ids) {
    if (id >= 0 && id < static_cast<int64_t>(pieces_.size())) joined += pieces_[id];
  }
  std::string bytes;
  UnicodeToBytes(joined, &bytes);
  return absl::StrReplaceAll(ToValidUtf8(bytes), {{kSuffix, " "}});
}

}  // namespace oclip
