#include "model/tokenizer/bpe.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <queue>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/tokenizer/text_cleaning.h"

namespace oclip {
namespace {

struct ByteTable {
  std::array<char32_t, 256> code_point{};
  std::array<std::array<char, 3>, 256> utf8{};  // NUL-terminated, 1-2 bytes
  std::array<uint8_t, 256> utf8_size{};
  std::array<uint8_t, 256> in_table_order{};
  // Code point (U+0000..U+0143) -> byte + 1 (0: not a table character).
  std::array<uint16_t, 0x144> byte_of{};
};

bool MapsToItself(int b) {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

ByteTable BuildByteTable() {
  ByteTable table;
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    table.code_point[b] = MapsToItself(b) ? static_cast<char32_t>(b) : 256 + next++;
  }
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = table.code_point[b];
    if (cp < 0x80) {
      table.utf8[b] = {static_cast<char>(cp), 0, 0};
      table.utf8_size[b] = 1;
    } else {
      table.utf8[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F)),
                       0};
      table.utf8_size[b] = 2;
    }
    table.byte_of[cp] = static_cast<uint16_t>(b + 1);
  }
  int i = 0;
  for (char32_t cp = 0; cp < 0x144; ++cp) {
    if (table.byte_of[cp] != 0) table.in_table_order[i++] = table.byte_of[cp] - 1;
  }
  return table;
}

const ByteTable& Table() {
  static const ByteTable* const table = new ByteTable(BuildByteTable());
  return *table;
}

constexpr uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

char32_t ByteToUnicodeCodePoint(uint8_t byte) { return Table().code_point[byte]; }

absl::string_view ByteToUnicodeUtf8(uint8_t byte) {
  const ByteTable& table = Table();
  return absl::string_view(table.utf8[byte].data(), table.utf8_size[byte]);
}

const std::array<uint8_t, 256>& BytesInTableOrder() { return Table().in_table_order; }

std::string BytesToUnicode(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const absl::string_view s = ByteToUnicodeUtf8(static_cast<uint8_t>(c));
    out.append(s.data(), s.size());
  }
  return out;
}

bool UnicodeToBytes(absl::string_view text, std::string* bytes) {
  const ByteTable& table = Table();
  bool all_known = true;
  size_t i = 0;
  while (i < text.size()) {
    const auto c0 = static_cast<uint8_t>(text[i]);
    char32_t cp = 0x110000;
    size_t length = 1;
    if (c0 < 0x80) {
      cp = c0;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < text.size() &&
               (static_cast<uint8_t>(text[i + 1]) & 0xC0) == 0x80) {
      cp = ((c0 & 0x1F) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3F);
      length = 2;
    } else {
      // Not a table character (those are at most two bytes long): skip the
      // whole UTF-8 sequence if it is one.
      while (i + length < text.size() && (static_cast<uint8_t>(text[i + length]) & 0xC0) == 0x80 &&
             length < 4 && c0 >= 0xC0) {
        ++length;
      }
    }
    if (cp < table.byte_of.size() && table.byte_of[cp] != 0) {
      bytes->push_back(static_cast<char>(table.byte_of[cp] - 1));
    } else {
      bytes->append("\xEF\xBF\xBD");
      all_known = false;
    }
    i += length;
  }
  return all_known;
}

namespace {

std::array<CharClass, 128> BuildAsciiClasses() {
  std::array<CharClass, 128> classes;
  for (int c = 0; c < 128; ++c) {
    if (IsRegexWhitespace(c)) {
      classes[c] = CharClass::kSpace;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      classes[c] = CharClass::kLetter;
    } else if (c >= '0' && c <= '9') {
      classes[c] = CharClass::kNumber;
    } else {
      classes[c] = CharClass::kOther;
    }
  }
  return classes;
}

CharClass ClassOf(char32_t c) {
  if (IsRegexWhitespace(c)) return CharClass::kSpace;
  const uint32_t mask = U_GET_GC_MASK(static_cast<UChar32>(c));
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

}  // namespace

CharClass NextCharClass(absl::string_view text, size_t* i) {
  static const std::array<CharClass, 128> kAscii = BuildAsciiClasses();
  const auto b0 = static_cast<uint8_t>(text[*i]);
  if (b0 < 0x80) {
    ++*i;
    return kAscii[b0];
  }
  size_t length = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 1;
  if (length == 1 || *i + length > text.size()) {
    ++*i;
    return CharClass::kOther;
  }
  char32_t cp = b0 & (0x7F >> length);
  for (size_t k = 1; k < length; ++k) {
    const auto b = static_cast<uint8_t>(text[*i + k]);
    if ((b & 0xC0) != 0x80) {
      ++*i;
      return CharClass::kOther;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  *i += length;
  return ClassOf(cp);
}

absl::StatusOr<absl::flat_hash_map<std::string, int32_t>> ParseVocabJson(absl::string_view json,
                                                                         absl::string_view source) {
  const nlohmann::json parsed =
      nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    return absl::DataLossError(absl::StrCat(source, ": not a JSON object of piece -> id"));
  }
  absl::flat_hash_map<std::string, int32_t> vocab;
  vocab.reserve(parsed.size());
  for (auto it = parsed.begin(); it != parsed.end(); ++it) {
    const nlohmann::json& id = it.value();
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return absl::DataLossError(
          absl::StrCat(source, ": the id of piece '", it.key(), "' is not a non-negative int32"));
    }
    vocab[it.key()] = static_cast<int32_t>(id.get<int64_t>());
  }
  return vocab;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseMerges(
    absl::string_view text, absl::string_view source, bool skip_first_line, size_t max_merges) {
  std::vector<std::pair<std::string, std::string>> merges;
  size_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (merges.size() >= max_merges) break;
    if (line_number == 1 && (skip_first_line || absl::StartsWith(line, "#version"))) continue;
    line = absl::StripTrailingAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() != 2) {
      return absl::DataLossError(absl::StrCat(source, ": line ", line_number,
                                              " is not a merge of two pieces: '", line, "'"));
    }
    merges.emplace_back(std::string(parts[0]), std::string(parts[1]));
  }
  return merges;
}

struct BytePairEncoder::CacheShard {
  mutable absl::Mutex mu;
  absl::flat_hash_map<std::string, std::vector<int32_t>> words ABSL_GUARDED_BY(mu);
};

BytePairEncoder::BytePairEncoder(Options options)
    : options_(std::move(options)), cache_(new CacheShard[kCacheShards]) {}

BytePairEncoder::~BytePairEncoder() = default;

int32_t BytePairEncoder::InternSymbol(const std::string& text) {
  auto [it, inserted] = symbol_index_.try_emplace(text, static_cast<int32_t>(symbol_text_.size()));
  if (inserted) {
    symbol_text_.push_back(text);
    auto id = vocab_.find(text);
    symbol_id_.push_back(id == vocab_.end() ? options_.unknown_id : id->second);
  }
  return it->second;
}

absl::StatusOr<std::unique_ptr<BytePairEncoder>> BytePairEncoder::Create(
    const absl::flat_hash_map<std::string, int32_t>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, Options options) {
  std::unique_ptr<BytePairEncoder> bpe(new BytePairEncoder(std::move(options)));
  bpe->vocab_ = vocab;
  const std::string& suffix = bpe->options_.end_of_word_suffix;
  for (int b = 0; b < 256; ++b) {
    const std::string base(ByteToUnicodeUtf8(static_cast<uint8_t>(b)));
    bpe->base_symbol_[b] = bpe->InternSymbol(base);
    bpe->base_symbol_end_[b] =
        suffix.empty() ? bpe->base_symbol_[b] : bpe->InternSymbol(base + suffix);
  }
  bpe->merges_.reserve(merges.size());
  bpe->rank_pairs_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left_text, right_text] = merges[rank];
    const int32_t left = bpe->InternSymbol(left_text);
    const int32_t right = bpe->InternSymbol(right_text);
    const int32_t result = bpe->InternSymbol(left_text + right_text);
    // A pair listed twice keeps its later rank, as dict(zip(merges, ranks)).
    bpe->merges_[PairKey(left, right)] = Merge{static_cast<int32_t>(rank), result};
    bpe->rank_pairs_.emplace_back(left, right);
  }
  if (bpe->options_.unknown_id < 0) {
    for (size_t i = 0; i < bpe->symbol_text_.size(); ++i) {
      if (bpe->symbol_id_[i] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "BPE piece '", bpe->symbol_text_[i], "' (a byte or a merge result) has no id in the ",
            "vocabulary and no unknown id is set"));
      }
    }
  }
  return bpe;
}

const BytePairEncoder::Merge* BytePairEncoder::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

// Python's loop, verbatim: find the lowest-ranked adjacent pair (its leftmost
// occurrence), then merge every non-overlapping occurrence from there on.
void BytePairEncoder::MergeByScan(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  while (s.size() > 1) {
    const Merge* best = nullptr;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const Merge* m = FindMerge(s[i], s[i + 1]);
      if (m != nullptr && (best == nullptr || m->rank < best->rank)) {
        best = m;
        best_at = i;
      }
    }
    if (best == nullptr) return;
    const int32_t left = s[best_at];
    const int32_t right = s[best_at + 1];
    size_t out = best_at;
    for (size_t i = best_at; i < s.size();) {
      if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
        s[out++] = best->result;
        i += 2;
      } else {
        s[out++] = s[i++];
      }
    }
    s.resize(out);
  }
}

// The same result in O(n log n) for long words: a heap of (rank, position)
// candidates over a linked list of symbols. All candidates of the lowest rank
// are taken as one batch and merged left to right, which is what the scan does
// (pairs created by a batch wait for the next round even if ranked lower).
void BytePairEncoder::MergeByHeap(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& s = *symbols;
  const size_t n = s.size();
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  using Candidate = std::pair<int32_t, int32_t>;  // (rank, left position)
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t at) {
    if (at < 0 || next[at] < 0) return;
    if (const Merge* m = FindMerge(s[at], s[next[at]])) heap.emplace(m->rank, at);
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  std::vector<int32_t> batch;
  while (!heap.empty()) {
    const int32_t rank = heap.top().first;
    batch.clear();
    while (!heap.empty() && heap.top().first == rank) {
      batch.push_back(heap.top().second);
      heap.pop();
    }
    // The heap pops positions in increasing order within a rank.
    const auto [left, right] = rank_pairs_[rank];
    const int32_t result = merges_.find(PairKey(left, right))->second.result;
    for (int32_t at : batch) {
      if (!alive[at] || next[at] < 0 || s[at] != left || s[next[at]] != right) continue;
      const int32_t gone = next[at];
      s[at] = result;
      alive[gone] = false;
      next[at] = next[gone];
      if (next[at] >= 0) prev[next[at]] = at;
    }
    for (int32_t at : batch) {
      if (!alive[at] || s[at] != result) continue;
      push(prev[at]);
      push(at);
    }
  }
  size_t out = 0;
  for (int32_t at = 0; at >= 0 && static_cast<size_t>(at) < n; at = next[at]) s[out++] = s[at];
  s.resize(out);
}

void BytePairEncoder::MergeWord(absl::string_view word, std::vector<int32_t>* symbols) const {
  symbols->clear();
  if (word.empty()) return;
  symbols->reserve(word.size());
  for (size_t i = 0; i + 1 < word.size(); ++i) {
    symbols->push_back(base_symbol_[static_cast<uint8_t>(word[i])]);
  }
  symbols->push_back(base_symbol_end_[static_cast<uint8_t>(word.back())]);
  if (symbols->size() > options_.heap_merge_threshold) {
    MergeByHeap(symbols);
  } else {
    MergeByScan(symbols);
  }
}

void BytePairEncoder::Symbols(absl::string_view word, std::vector<int32_t>* symbols) const {
  const bool cacheable =
      options_.cache_capacity > 0 && word.size() <= options_.max_cached_word_bytes;
  if (!cacheable) {
    MergeWord(word, symbols);
    return;
  }
  CacheShard& shard = cache_[absl::Hash<absl::string_view>{}(word) % kCacheShards];
  {
    absl::ReaderMutexLock lock(&shard.mu);
    auto it = shard.words.find(word);
    if (it != shard.words.end()) {
      *symbols = it->second;
      return;
    }
  }
  MergeWord(word, symbols);
  absl::MutexLock lock(&shard.mu);
  if (shard.words.size() >= options_.cache_capacity / kCacheShards + 1) shard.words.clear();
  shard.words.try_emplace(word, *symbols);
}

void BytePairEncoder::Encode(absl::string_view word, std::vector<int32_t>* ids) const {
  thread_local std::vector<int32_t> symbols;
  Symbols(word, &symbols);
  for (int32_t symbol : symbols) ids->push_back(symbol_id_[symbol]);
}

std::vector<std::string> BytePairEncoder::Pieces(absl::string_view word) const {
  std::vector<int32_t> symbols;
  Symbols(word, &symbols);
  std::vector<std::string> pieces;
  pieces.reserve(symbols.size());
  for (int32_t symbol : symbols) pieces.push_back(symbol_text_[symbol]);
  return pieces;
}

int32_t BytePairEncoder::PieceId(absl::string_view piece) const {
  auto it = vocab_.find(piece);
  return it == vocab_.end() ? options_.unknown_id : it->second;
}

}  // namespace oclip
