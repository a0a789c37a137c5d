#include "model/tokenizer/sentencepiece_tokenizer.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "model/tokenizer/text_cleaning.h"

namespace oclip {
namespace {

// ---------------------------------------------------------------------------
// Protobuf wire format, just enough for sentencepiece_model.proto.

enum WireType { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

class WireReader {
 public:
  explicit WireReader(absl::string_view data) : data_(data) {}

  bool done() const { return data_.empty(); }

  bool ReadKey(uint32_t* field, int* wire_type) {
    uint64_t key;
    if (!ReadVarint(&key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff) return false;
    *field = static_cast<uint32_t>(key >> 3);
    *wire_type = static_cast<int>(key & 7);
    return true;
  }

  bool ReadVarint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (data_.empty()) return false;
      uint8_t byte = static_cast<uint8_t>(data_[0]);
      data_.remove_prefix(1);
      *value |= uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }

  bool ReadBytes(absl::string_view* bytes) {
    uint64_t size;
    if (!ReadVarint(&size) || size > data_.size()) return false;
    *bytes = data_.substr(0, size);
    data_.remove_prefix(size);
    return true;
  }

  bool ReadFloat(float* value) {
    if (data_.size() < 4) return false;
    uint32_t bits = 0;
    for (int i = 3; i >= 0; --i) bits = (bits << 8) | static_cast<uint8_t>(data_[i]);
    std::memcpy(value, &bits, 4);
    data_.remove_prefix(4);
    return true;
  }

  bool Skip(int wire_type) {
    uint64_t ignored;
    absl::string_view bytes;
    switch (wire_type) {
      case kVarint:
        return ReadVarint(&ignored);
      case kFixed64:
        return Advance(8);
      case kLengthDelimited:
        return ReadBytes(&bytes);
      case kFixed32:
        return Advance(4);
      default:  // groups are not used by sentencepiece_model.proto
        return false;
    }
  }

 private:
  bool Advance(size_t n) {
    if (data_.size() < n) return false;
    data_.remove_prefix(n);
    return true;
  }

  absl::string_view data_;
};

// ModelProto.SentencePiece.Type
enum PieceType {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

struct PieceProto {
  std::string piece;
  float score = 0;
  int type = kNormal;
};

// The fields of ModelProto that encoding uses, with the proto defaults.
struct ModelProto {
  std::vector<PieceProto> pieces;
  int model_type = 1;  // TrainerSpec.ModelType: UNIGRAM
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

bool ParsePiece(absl::string_view bytes, PieceProto* piece) {
  WireReader reader(bytes);
  while (!reader.done()) {
    uint32_t field;
    int type;
    if (!reader.ReadKey(&field, &type)) return false;
    absl::string_view text;
    uint64_t number;
    if (field == 1 && type == kLengthDelimited) {
      if (!reader.ReadBytes(&text)) return false;
      piece->piece = std::string(text);
    } else if (field == 2 && type == kFixed32) {
      if (!reader.ReadFloat(&piece->score)) return false;
    } else if (field == 3 && type == kVarint) {
      if (!reader.ReadVarint(&number)) return false;
      piece->type = static_cast<int>(number);
    } else if (!reader.Skip(type)) {
      return false;
    }
  }
  return true;
}

bool ParseTrainerSpec(absl::string_view bytes, ModelProto* model) {
  WireReader reader(bytes);
  while (!reader.done()) {
    uint32_t field;
    int type;
    uint64_t number;
    if (!reader.ReadKey(&field, &type)) return false;
    if (type == kVarint && (field == 3 || field == 24 || field == 35)) {
      if (!reader.ReadVarint(&number)) return false;
      if (field == 3) model->model_type = static_cast<int>(number);
      if (field == 24) model->treat_whitespace_as_suffix = number != 0;
      if (field == 35) model->byte_fallback = number != 0;
    } else if (!reader.Skip(type)) {
      return false;
    }
  }
  return true;
}

bool ParseNormalizerSpec(absl::string_view bytes, ModelProto* model) {
  WireReader reader(bytes);
  while (!reader.done()) {
    uint32_t field;
    int type;
    uint64_t number;
    absl::string_view blob;
    if (!reader.ReadKey(&field, &type)) return false;
    if (field == 2 && type == kLengthDelimited) {
      if (!reader.ReadBytes(&blob)) return false;
      model->precompiled_charsmap = std::string(blob);
    } else if (type == kVarint && field >= 3 && field <= 5) {
      if (!reader.ReadVarint(&number)) return false;
      if (field == 3) model->add_dummy_prefix = number != 0;
      if (field == 4) model->remove_extra_whitespaces = number != 0;
      if (field == 5) model->escape_whitespaces = number != 0;
    } else if (!reader.Skip(type)) {
      return false;
    }
  }
  return true;
}

bool ParseModelProto(absl::string_view bytes, ModelProto* model) {
  WireReader reader(bytes);
  while (!reader.done()) {
    uint32_t field;
    int type;
    if (!reader.ReadKey(&field, &type)) return false;
    if (type != kLengthDelimited || field < 1 || field > 3) {
      if (!reader.Skip(type)) return false;
      continue;
    }
    absl::string_view message;
    if (!reader.ReadBytes(&message)) return false;
    bool ok = true;
    if (field == 1) {
      model->pieces.emplace_back();
      ok = ParsePiece(message, &model->pieces.back());
    } else if (field == 2) {
      ok = ParseTrainerSpec(message, model);
    } else {
      ok = ParseNormalizerSpec(message, model);
    }
    if (!ok) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// UTF-8 helpers with SentencePiece's conventions.

// SentencePiece's OneCharLen: the length implied by the lead byte.
int OneCharLen(uint8_t lead) {
  static constexpr int kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

// Length of a valid UTF-8 character at the start of `s`, 0 if malformed.
size_t ValidCharLen(absl::string_view s) {
  char32_t cp;
  bool valid;
  const size_t length = DecodeUtf8Char(s, 0, &cp, &valid);
  return valid ? length : 0;
}

// ---------------------------------------------------------------------------
// A set of strings answering "which of them are prefixes of this text" by
// narrowing a sorted range one byte at a time (the job of SentencePiece's
// Darts trie; std::string_view ordering compares bytes as unsigned).

class PrefixIndex {
 public:
  void Add(const std::string& key, int value) { entries_.push_back({key, value}); }
  void Build() { std::sort(entries_.begin(), entries_.end()); }
  bool empty() const { return entries_.empty(); }
  // The first key added twice, or null.
  const std::string* FindDuplicate() const {
    for (size_t i = 1; i < entries_.size(); ++i) {
      if (entries_[i].key == entries_[i - 1].key) return &entries_[i].key;
    }
    return nullptr;
  }

  // Calls visit(length, value) for every key that is a prefix of `text`, in
  // increasing length.
  template <typename Visit>
  void ForEachPrefix(absl::string_view text, Visit visit) const {
    auto lo = entries_.begin();
    auto hi = entries_.end();
    for (size_t k = 0; k < text.size() && lo != hi; ++k) {
      // Within [lo, hi) every key starts with text[0, k); a key of length k
      // sorts first, the rest are ordered by their byte k.
      if (lo->key.size() == k) ++lo;
      const auto c = static_cast<uint8_t>(text[k]);
      lo = std::lower_bound(
          lo, hi, c, [k](const Entry& e, uint8_t v) { return static_cast<uint8_t>(e.key[k]) < v; });
      hi = std::upper_bound(
          lo, hi, c, [k](uint8_t v, const Entry& e) { return v < static_cast<uint8_t>(e.key[k]); });
      if (lo != hi && lo->key.size() == k + 1) visit(k + 1, lo->value);
    }
  }

 private:
  struct Entry {
    std::string key;
    int value;
    bool operator<(const Entry& other) const { return key < other.key; }
  };
  std::vector<Entry> entries_;
};

// ---------------------------------------------------------------------------
// The precompiled charsmap: <uint32 trie size><Darts-clone double array><'\0'-
// separated replacement strings>, as SentencePiece's normalizer reads it.

class CharsMap {
 public:
  static absl::StatusOr<CharsMap> Decode(absl::string_view blob) {
    CharsMap map;
    if (blob.empty()) return map;
    if (blob.size() <= 4) return absl::InvalidArgumentError("precompiled charsmap is broken");
    uint32_t trie_size = 0;
    for (int i = 3; i >= 0; --i) trie_size = (trie_size << 8) | static_cast<uint8_t>(blob[i]);
    if (trie_size > blob.size() - 4 || trie_size % 4 != 0 || trie_size == 0) {
      return absl::InvalidArgumentError("precompiled charsmap trie size exceeds the blob");
    }
    map.units_.resize(trie_size / 4);
    for (size_t i = 0; i < map.units_.size(); ++i) {
      const char* p = blob.data() + 4 + 4 * i;
      map.units_[i] = static_cast<uint32_t>(static_cast<uint8_t>(p[0])) |
                      static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 8 |
                      static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 16 |
                      static_cast<uint32_t>(static_cast<uint8_t>(p[3])) << 24;
    }
    map.replacements_ = std::string(blob.substr(4 + trie_size));
    return map;
  }

  bool empty() const { return units_.empty(); }

  // The longest rule matching a prefix of `input`: its length and
  // replacement; length 0 if none. Out-of-range trie data counts as no match.
  std::pair<size_t, absl::string_view> LongestMatch(absl::string_view input) const {
    std::pair<size_t, absl::string_view> best{0, {}};
    if (units_.empty()) return best;
    size_t node = Offset(units_[0]);
    for (size_t i = 0; i < input.size(); ++i) {
      const auto c = static_cast<uint8_t>(input[i]);
      node ^= c;
      if (node >= units_.size() || Label(units_[node]) != c) break;
      const bool has_leaf = (units_[node] >> 8) & 1;
      node ^= Offset(units_[node]);
      if (!has_leaf) continue;
      if (node >= units_.size()) break;
      const size_t value = units_[node] & 0x7fffffffu;
      if (value >= replacements_.size()) break;
      best = {i + 1, absl::string_view(replacements_.c_str() + value)};
    }
    return best;
  }

 private:
  static uint32_t Label(uint32_t unit) { return unit & ((1u << 31) | 0xffu); }
  static uint32_t Offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

  std::vector<uint32_t> units_;
  std::string replacements_;  // ends with '\0', so c_str() + value is terminated
};

constexpr absl::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581
constexpr float kUnkPenalty = 10.0f;

}  // namespace

// ---------------------------------------------------------------------------
// The parsed model and SentencePiece's encode path.

struct SentencePieceModel {
  ModelProto proto;
  CharsMap charsmap;
  PrefixIndex pieces;             // NORMAL, USER_DEFINED, UNUSED pieces -> spm id
  PrefixIndex user_defined;       // USER_DEFINED pieces (kept unnormalized)
  std::array<int, 256> byte_ids;  // <0xXX> pieces for byte fallback, -1 if absent
  int unk_id = -1;
  float min_score = FLT_MAX;
  float max_score = FLT_MIN;

  // Normalizer::NormalizePrefix: (replacement, consumed bytes).
  std::pair<absl::string_view, size_t> NormalizePrefix(absl::string_view input) const {
    size_t user_len = 0;
    user_defined.ForEachPrefix(input, [&user_len](size_t len, int) { user_len = len; });
    if (user_len > 0) return {input.substr(0, user_len), user_len};
    auto [match_len, replacement] = charsmap.LongestMatch(input);
    if (match_len > 0) return {replacement, match_len};
    size_t len = ValidCharLen(input);
    if (len == 0) return {"\xef\xbf\xbd", 1};  // malformed: U+FFFD for one byte
    return {input.substr(0, len), len};
  }

  // Normalizer::Normalize without the offsets.
  std::string Normalize(absl::string_view input) const {
    const ModelProto& p = proto;
    std::string out;
    if (p.remove_extra_whitespaces) {
      while (!input.empty()) {
        auto [sp, consumed] = NormalizePrefix(input);
        if (sp != " ") break;
        input.remove_prefix(consumed);
      }
    }
    if (input.empty()) return out;
    const absl::string_view space = p.escape_whitespaces ? kSpaceSymbol : " ";
    if (!p.treat_whitespace_as_suffix && p.add_dummy_prefix) out.append(space.data(), space.size());
    bool is_prev_space = p.remove_extra_whitespaces;
    while (!input.empty()) {
      auto [sp, consumed] = NormalizePrefix(input);
      while (is_prev_space && absl::ConsumePrefix(&sp, " ")) {
      }
      if (!sp.empty()) {
        for (char c : sp) {
          if (c == ' ' && p.escape_whitespaces) {
            out.append(kSpaceSymbol.data(), kSpaceSymbol.size());
          } else {
            out.push_back(c);
          }
        }
        is_prev_space = sp.back() == ' ';
      }
      input.remove_prefix(consumed);
      if (!p.remove_extra_whitespaces) is_prev_space = false;
    }
    if (p.remove_extra_whitespaces) {
      while (absl::EndsWith(out, space)) out.resize(out.size() - space.size());
    }
    if (p.treat_whitespace_as_suffix && p.add_dummy_prefix) out.append(space.data(), space.size());
    return out;
  }

  // unigram::Model::EncodeOptimized: Viterbi over byte positions. Piece scores
  // are float, the candidate sums double, the stored best float, as there.
  std::vector<std::pair<absl::string_view, int>> Viterbi(absl::string_view normalized) const {
    struct Best {
      int id = -1;
      float score = 0;
      int starts_at = -1;
    };
    const int size = static_cast<int>(normalized.size());
    const float unk_score = min_score - kUnkPenalty;
    std::vector<Best> best(size + 1);
    auto relax = [&best](int end, int start, double candidate, int id) {
      Best& target = best[end];
      if (target.starts_at == -1 || candidate > target.score) {
        target.score = static_cast<float>(candidate);
        target.starts_at = start;
        target.id = id;
      }
    };
    for (int start = 0; start < size;) {
      const float till_here = best[start].score;
      const int mblen = std::min(OneCharLen(static_cast<uint8_t>(normalized[start])), size - start);
      bool has_single_node = false;
      pieces.ForEachPrefix(normalized.substr(start), [&](size_t len, int id) {
        const PieceProto& piece = proto.pieces[id];
        if (piece.type == kUnused) return;
        const double score = piece.type == kUserDefined ? static_cast<double>(len) * max_score - 0.1
                                                        : static_cast<double>(piece.score);
        relax(start + static_cast<int>(len), start, score + till_here, id);
        if (static_cast<int>(len) == mblen) has_single_node = true;
      });
      if (!has_single_node) relax(start + mblen, start, unk_score + till_here, unk_id);
      start += mblen;
    }
    std::vector<std::pair<absl::string_view, int>> result;
    for (int end = size; end > 0 && best[end].starts_at >= 0; end = best[end].starts_at) {
      result.emplace_back(normalized.substr(best[end].starts_at, end - best[end].starts_at),
                          best[end].id);
    }
    std::reverse(result.begin(), result.end());
    return result;
  }

  // SentencePiece ids of `text` (normalize, segment, then as
  // SentencePieceProcessor::Encode: unknown pieces become their bytes with
  // byte fallback, else runs of unknown pieces merge into one).
  void Encode(absl::string_view text, std::vector<int>* ids) const {
    std::string normalized = Normalize(text);
    bool previous_unknown = false;
    for (const auto& [surface, id] : Viterbi(normalized)) {
      const bool unknown = id == unk_id;
      if (unknown && proto.byte_fallback) {
        for (char c : surface) ids->push_back(byte_ids[static_cast<uint8_t>(c)]);
      } else if (!(unknown && previous_unknown)) {
        ids->push_back(id);
      }
      previous_unknown = unknown;
    }
  }
};

namespace {

absl::Status IndexPieces(const std::string& path, SentencePieceModel* model) {
  model->byte_ids.fill(-1);
  for (size_t i = 0; i < model->proto.pieces.size(); ++i) {
    const PieceProto& piece = model->proto.pieces[i];
    const int id = static_cast<int>(i);
    if (piece.piece.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": piece ", id, " is empty"));
    }
    switch (piece.type) {
      case kNormal:
        model->min_score = std::min(model->min_score, piece.score);
        model->max_score = std::max(model->max_score, piece.score);
        model->pieces.Add(piece.piece, id);
        break;
      case kUserDefined:
        model->user_defined.Add(piece.piece, id);
        model->pieces.Add(piece.piece, id);
        break;
      case kUnused:
        model->pieces.Add(piece.piece, id);
        break;
      case kUnknown:
        if (model->unk_id >= 0) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": <unk> is defined twice"));
        }
        model->unk_id = id;
        break;
      case kByte: {
        unsigned value = 0;
        if (piece.piece.size() == 6 && std::sscanf(piece.piece.c_str(), "<0x%2X>", &value) == 1) {
          model->byte_ids[value & 0xff] = id;
        }
        break;
      }
      case kControl:
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": piece ", id, " has unknown type ", piece.type));
    }
  }
  if (model->unk_id < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": no <unk> piece"));
  if (model->proto.byte_fallback &&
      std::count(model->byte_ids.begin(), model->byte_ids.end(), -1) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": byte fallback is on but <0x00>..<0xFF> are incomplete"));
  }
  model->pieces.Build();
  model->user_defined.Build();
  if (const std::string* duplicate = model->pieces.FindDuplicate()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": piece '", *duplicate, "' is defined twice"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SentencePieceModel>> LoadModel(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto model = std::make_unique<SentencePieceModel>();
  if (bytes.empty() || !ParseModelProto(bytes, &model->proto) || model->proto.pieces.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a SentencePiece model (expected XLM-RoBERTa's sentencepiece.bpe.model)"));
  }
  if (model->proto.model_type != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": SentencePiece model type ", model->proto.model_type,
                     " is not supported (only unigram, as XLM-RoBERTa uses)"));
  }
  auto charsmap = CharsMap::Decode(model->proto.precompiled_charsmap);
  if (!charsmap.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", charsmap.status().message()));
  }
  model->charsmap = std::move(*charsmap);
  OCLIP_RETURN_IF_ERROR(IndexPieces(path, model.get()));
  return model;
}

// Special tokens recognised in the text, as HF's added-token split does.
struct SpecialToken {
  absl::string_view text;
  int64_t id;       // -1: <mask>, whose id depends on the vocabulary
  bool strip_left;  // AddedToken(lstrip=True): spaces before it are dropped
};

constexpr std::array<SpecialToken, 5> kSpecialTokens = {{
    {"<s>", SentencePieceTokenizer::kBosId, false},
    {"<pad>", SentencePieceTokenizer::kPadId, false},
    {"</s>", SentencePieceTokenizer::kEosId, false},
    {"<unk>", SentencePieceTokenizer::kUnkId, false},
    {"<mask>", -1, true},
}};

// The earliest special token in `text` at or after `from`; returns
// text.size() and sets *found to null when there is none.
size_t FindSpecialToken(absl::string_view text, size_t from, const SpecialToken** found) {
  size_t best = text.size();
  *found = nullptr;
  for (const SpecialToken& token : kSpecialTokens) {
    size_t pos = text.find(token.text, from);
    if (pos != absl::string_view::npos && pos < best) {
      best = pos;
      *found = &token;
    }
  }
  return best;
}

}  // namespace

// ---------------------------------------------------------------------------
// SentencePieceTokenizer.

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::FromModelFile(
    const std::string& path, int context_length) {
  if (context_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_length must be at least 2 (for <s> and </s>), got ", context_length));
  }
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<SentencePieceModel> model, LoadModel(path));
  return std::unique_ptr<SentencePieceTokenizer>(
      new SentencePieceTokenizer(std::move(model), context_length));
}

SentencePieceTokenizer::SentencePieceTokenizer(std::unique_ptr<const SentencePieceModel> model,
                                               int context_length)
    : model_(std::move(model)),
      context_length_(context_length),
      // fairseq offset 1, plus <mask> after the last piece.
      vocab_size_(static_cast<int>(model_->proto.pieces.size()) + 2) {}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::string SentencePieceTokenizer::Normalize(const std::string& text) const {
  return model_->Normalize(text);
}

void SentencePieceTokenizer::EncodePlain(absl::string_view text, std::vector<int64_t>* ids) const {
  std::vector<int> pieces;
  model_->Encode(text, &pieces);
  for (int piece : pieces) ids->push_back(piece == model_->unk_id ? kUnkId : int64_t{piece} + 1);
}

std::vector<int64_t> SentencePieceTokenizer::EncodeIds(const std::string& cleaned_text) const {
  std::vector<int64_t> ids;
  absl::string_view text = cleaned_text;
  size_t pos = 0;
  while (pos < text.size()) {
    const SpecialToken* special = nullptr;
    size_t at = FindSpecialToken(text, pos, &special);
    absl::string_view chunk = text.substr(pos, at - pos);
    if (special != nullptr && special->strip_left) {
      chunk = absl::StripTrailingAsciiWhitespace(chunk);
    }
    EncodePlain(chunk, &ids);
    if (special == nullptr) break;
    ids.push_back(special->id >= 0 ? special->id : mask_id());
    pos = at + special->text.size();
  }
  return ids;
}

void SentencePieceTokenizer::FillRow(const std::string& text, int64_t* row) const {
  std::vector<int64_t> ids = EncodeIds(CleanWhitespace(text));
  const size_t kept = std::min(ids.size(), static_cast<size_t>(context_length_ - 2));
  row[0] = kBosId;
  std::copy(ids.begin(), ids.begin() + kept, row + 1);
  row[kept + 1] = kEosId;
}

std::vector<int64_t> SentencePieceTokenizer::Tokenize(absl::Span<const std::string> texts) const {
  std::vector<int64_t> rows(texts.size() * context_length_, kPadId);
  for (size_t i = 0; i < texts.size(); ++i) FillRow(texts[i], rows.data() + i * context_length_);
  return rows;
}

}  // namespace oclip
