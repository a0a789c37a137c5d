#include "model/tokenizer/text_cleaning.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace oclip {
namespace {

#include "model/tokenizer/text_cleaning_data.inc"

using icu::UnicodeString;

// ---------------------------------------------------------------------------
// UTF-8 helpers.

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

size_t DecodeUtf8Char(absl::string_view s, size_t i, char32_t* cp, bool* valid) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  *valid = true;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  char32_t value = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *cp = 0xFFFD;
    *valid = false;
    return 1;
  }
  size_t length = 1;
  for (size_t k = 0; k < need; ++k) {
    if (i + length >= s.size()) break;
    const auto b = static_cast<uint8_t>(s[i + length]);
    if (b < lo || b > hi) break;
    value = (value << 6) | (b & 0x3F);
    ++length;
    lo = 0x80;
    hi = 0xBF;
  }
  if (length != need + 1) {
    *cp = 0xFFFD;
    *valid = false;
    return length;
  }
  *cp = value;
  return length;
}

namespace {

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    char32_t cp;
    bool valid;
    i += DecodeUtf8Char(s, i, &cp, &valid);
    if (!valid) return false;
  }
  return true;
}

// Strict UTF-8 (Python's "utf-8" codec): false on any invalid sequence.
bool DecodeUtf8Strict(absl::string_view bytes, UnicodeString* out) {
  if (!IsValidUtf8(bytes)) return false;
  *out = UnicodeString::fromUTF8(icu::StringPiece(bytes.data(), bytes.size()));
  return true;
}

// ftfy's "utf-8-variants": UTF-8 plus CESU-8 surrogate pairs and Java's C0 80.
bool DecodeUtf8Variants(absl::string_view bytes, UnicodeString* out) {
  out->remove();
  size_t plain_start = 0;
  auto flush = [&](size_t end) {
    UnicodeString part;
    if (!DecodeUtf8Strict(bytes.substr(plain_start, end - plain_start), &part)) return false;
    out->append(part);
    return true;
  };
  auto byte = [&](size_t k) { return static_cast<uint8_t>(bytes[k]); };
  for (size_t i = 0; i < bytes.size();) {
    if (byte(i) == 0xC0 && i + 1 < bytes.size() && byte(i + 1) == 0x80) {
      if (!flush(i)) return false;
      out->append(static_cast<UChar32>(0));
      i += 2;
      plain_start = i;
    } else if (byte(i) == 0xED && i + 6 <= bytes.size() && byte(i + 1) >= 0xA0 &&
               byte(i + 1) <= 0xAF && (byte(i + 2) & 0xC0) == 0x80 && byte(i + 3) == 0xED &&
               byte(i + 4) >= 0xB0 && byte(i + 4) <= 0xBF && (byte(i + 5) & 0xC0) == 0x80) {
      if (!flush(i)) return false;
      const UChar32 cp = ((byte(i + 1) & 0x0F) << 16) + ((byte(i + 2) & 0x3F) << 10) +
                         ((byte(i + 4) & 0x0F) << 6) + (byte(i + 5) & 0x3F) + 0x10000;
      out->append(cp);
      i += 6;
      plain_start = i;
    } else {
      ++i;
    }
  }
  return flush(bytes.size());
}

UnicodeString FromUtf8(absl::string_view s) {
  return UnicodeString::fromUTF8(icu::StringPiece(s.data(), s.size()));
}

std::string ToUtf8(const UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

// Applies `f(code_point, &out)` to every code point.
template <typename F>
UnicodeString MapCodePoints(const UnicodeString& s, F f) {
  UnicodeString out;
  for (int32_t i = 0; i < s.length();) {
    const UChar32 c = s.char32At(i);
    i += U16_LENGTH(c);
    f(c, &out);
  }
  return out;
}

// Whether any UTF-16 unit of `s` satisfies `pred` (enough for the BMP-only
// character sets of the fixes below).
template <typename Pred>
bool AnyUnit(const UnicodeString& s, Pred pred) {
  const char16_t* units = s.getBuffer();
  for (int32_t i = 0; i < s.length(); ++i) {
    if (pred(units[i])) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Character classes.

bool IsAsciiAlnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool IsAsciiHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// ---------------------------------------------------------------------------
// Python's html.unescape.

using EntityMap = absl::flat_hash_map<absl::string_view, absl::string_view>;

const EntityMap& Html5Entities() {
  static const EntityMap* const map = [] {
    auto* m = new EntityMap();
    for (const HtmlEntity& e : kHtml5Entities) m->emplace(e.name, e.value);
    return m;
  }();
  return *map;
}

// ftfy's HTML_ENTITIES: html5 names ending in ';' plus the all-caps forms.
const EntityMap& FtfyEntities() {
  static const EntityMap* const map = [] {
    auto* m = new EntityMap();
    for (const HtmlEntity& e : kHtml5Entities) {
      const absl::string_view name(e.name);
      if (!name.empty() && name.back() == ';') m->emplace(name, e.value);
    }
    for (const HtmlEntity& e : kUpperCaseEntities) m->emplace(e.name, e.value);
    return m;
  }();
  return *map;
}

bool IsNoncharacterReference(uint32_t n) {
  return (n >= 0x1 && n <= 0x8) || n == 0xB || (n >= 0xE && n <= 0x1F) ||
         (n >= 0x7F && n <= 0x9F) || (n >= 0xFDD0 && n <= 0xFDEF) || (n & 0xFFFE) == 0xFFFE;
}

// Python's html._replace_charref for a numeric reference of value `n`
// (saturated at 0x110000).
void AppendNumericReference(uint32_t n, std::string* out) {
  static constexpr char16_t kWindows1252[32] = {
      0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
      0x2039, 0x0152, 0x8D,   0x017D, 0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
      0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};
  if (n == 0) {
    AppendUtf8(0xFFFD, out);
  } else if (n == 0x0D) {
    out->push_back('\r');
  } else if (n >= 0x80 && n <= 0x9F) {
    AppendUtf8(kWindows1252[n - 0x80], out);
  } else if ((n >= 0xD800 && n <= 0xDFFF) || n > 0x10FFFF) {
    AppendUtf8(0xFFFD, out);
  } else if (!IsNoncharacterReference(n)) {
    AppendUtf8(n, out);
  }
}

// Parses `&#...` at `amp` (text[amp] == '&', text[amp + 1] == '#'). Returns
// the length consumed, or 0 if it is no numeric reference.
size_t UnescapeNumeric(absl::string_view text, size_t amp, std::string* out) {
  size_t i = amp + 2;
  int base = 10;
  if (i < text.size() && (text[i] == 'x' || text[i] == 'X') && i + 1 < text.size() &&
      IsAsciiHex(text[i + 1])) {
    base = 16;
    ++i;
  } else if (i >= text.size() || text[i] < '0' || text[i] > '9') {
    return 0;
  }
  uint32_t value = 0;
  for (; i < text.size() && (base == 16 ? IsAsciiHex(text[i]) : (text[i] >= '0' && text[i] <= '9'));
       ++i) {
    const char c = text[i];
    const uint32_t digit = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
    value = value > 0x10FFFF ? 0x110000 : value * base + digit;
  }
  if (i < text.size() && text[i] == ';') ++i;
  AppendNumericReference(value > 0x10FFFF ? 0x110000 : value, out);
  return i - amp;
}

// Parses a named reference at `amp`. Returns the length consumed (the whole
// `[^\t\n\f <&#;]{1,32};?` match), or 0 if that pattern does not match.
size_t UnescapeNamed(absl::string_view text, size_t amp, std::string* out) {
  std::vector<size_t> ends;  // byte offset after each code point of the name
  size_t i = amp + 1;
  while (i < text.size() && ends.size() < 32) {
    const char c = text[i];
    if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
        c == ';') {
      break;
    }
    char32_t cp;
    bool valid;
    i += DecodeUtf8Char(text, i, &cp, &valid);
    ends.push_back(i);
  }
  if (ends.empty()) return 0;
  if (i < text.size() && text[i] == ';') {
    ++i;
    ends.push_back(i);
  }
  const absl::string_view name = text.substr(amp + 1, i - amp - 1);
  const EntityMap& entities = Html5Entities();
  if (auto it = entities.find(name); it != entities.end()) {
    out->append(it->second.data(), it->second.size());
    return i - amp;
  }
  // The longest prefix of at least two code points that is a name.
  for (size_t x = ends.size() - 1; x >= 2; --x) {
    const absl::string_view prefix = text.substr(amp + 1, ends[x - 1] - amp - 1);
    if (auto it = entities.find(prefix); it != entities.end()) {
      out->append(it->second.data(), it->second.size());
      out->append(name.substr(prefix.size()).data(), name.size() - prefix.size());
      return i - amp;
    }
  }
  out->append(text.data() + amp, i - amp);
  return i - amp;
}

std::string HtmlUnescapeValid(absl::string_view text) {
  if (text.find('&') == absl::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t amp = text.find('&', i);
    if (amp == absl::string_view::npos) break;
    out.append(text.data() + i, amp - i);
    size_t used = 0;
    if (amp + 1 < text.size() && text[amp + 1] == '#') {
      used = UnescapeNumeric(text, amp, &out);
    } else {
      used = UnescapeNamed(text, amp, &out);
    }
    if (used == 0) {
      out.push_back('&');
      used = 1;
    }
    i = amp + used;
  }
  out.append(text.data() + i, text.size() - i);
  return out;
}

// ftfy.fixes.unescape_html: `&#?[0-9A-Za-z]{1,24};` references only.
std::string FtfyUnescapeHtml(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t amp = text.find('&', i);
    if (amp == absl::string_view::npos) break;
    out.append(text.data() + i, amp - i);
    size_t j = amp + 1;
    const bool numeric = j < text.size() && text[j] == '#';
    if (numeric) ++j;
    const size_t run_start = j;
    while (j < text.size() && IsAsciiAlnum(text[j])) ++j;
    const size_t run = j - run_start;
    if (run < 1 || run > 24 || j >= text.size() || text[j] != ';') {
      out.push_back('&');
      i = amp + 1;
      continue;
    }
    const absl::string_view match = text.substr(amp, j + 1 - amp);
    const EntityMap& entities = FtfyEntities();
    if (auto it = entities.find(match.substr(1)); !numeric && it != entities.end()) {
      out.append(it->second.data(), it->second.size());
    } else if (numeric) {
      const std::string unescaped = HtmlUnescapeValid(match);
      out += unescaped.find(';') == std::string::npos ? unescaped : std::string(match);
    } else {
      out.append(match.data(), match.size());
    }
    i = j + 1;
  }
  out.append(text.data() + i, text.size() - i);
  return out;
}

// ---------------------------------------------------------------------------
// ftfy's mojibake detection (badness.py, chardata.py) as ICU regexes.

std::string Set(std::initializer_list<absl::string_view> bodies, absl::string_view extra = "") {
  std::string out = "[";
  for (absl::string_view b : bodies) absl::StrAppend(&out, b);
  absl::StrAppend(&out, extra, "]");
  return out;
}

// ICU escapes of literal characters.
std::string Lit(const char* utf8) {
  std::string out;
  const UnicodeString s = UnicodeString::fromUTF8(utf8);
  for (int32_t i = 0; i < s.length();) {
    const UChar32 c = s.char32At(i);
    i += U16_LENGTH(c);
    absl::StrAppend(&out, "\\x{", absl::Hex(c), "}");
  }
  return out;
}

// Python's \s (str.isspace) as an ICU set.
constexpr char kPythonSpace[] =
    R"([\t\n\x{b}\f\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029})"
    R"(\x{202f}\x{205f}\x{3000}])";

// ftfy's BADNESS_RE, for is_bad() (a boolean search). Alternatives that start
// with an ASCII class X are written "(?<=X)..." (the same search result) so
// that every alternative starts with a non-ASCII class and ICU can skip
// ASCII text quickly; "^[ÃÂ][ ]" is checked separately (StartsBadly).
std::string BadnessPatternText() {
  const std::string kA = Set({kBad, kLowerAccented, kUpperAccented, kBox, kStartPunctuation,
                              kEndPunctuation, kCurrency, kNumeric, kLaw});
  const std::string kAButBad = Set({kLowerAccented, kUpperAccented, kBox, kStartPunctuation,
                                    kEndPunctuation, kCurrency, kNumeric, kLaw});
  const std::string arabic =
      Set({kCommon, kCurrency, kBad, kNumeric, kStartPunctuation}, Lit("ŸŠ®°µ»"));
  const std::string cyrillic_mid =
      Set({kC1, kBad, kStartPunctuation, kEndPunctuation, kCurrency}, Lit("°µ"));
  const std::string greek_mid =
      Set({kC1, kBad, kStartPunctuation, kEndPunctuation, kCurrency}, Lit("°"));
  const std::string space(kPythonSpace);
  const std::vector<std::string> alternatives = {
      Set({kC1}),
      kA + Set({kBad}),
      "(?<=[a-zA-Z])" + Set({kLowerCommon, kUpperCommon}) + Set({kBad}),
      Set({kBad}) + kAButBad,
      Set({kLowerAccented, kLowerCommon, kBox, kEndPunctuation, kCurrency, kNumeric}) +
          Set({kUpperAccented}),
      Set({kBox, kEndPunctuation, kCurrency, kNumeric}) + Set({kLowerAccented}),
      Set({kLowerAccented, kBox, kEndPunctuation}) + Set({kCurrency}),
      "(?<=" + space + ")" + Set({kUpperAccented}) + Set({kCurrency}),
      Set({kUpperAccented, kBox}) + Set({kNumeric, kLaw}),
      Set({kLowerAccented, kUpperAccented, kBox, kCurrency, kEndPunctuation}) +
          Set({kStartPunctuation}) + Set({kNumeric}),
      Set({kLowerAccented, kUpperAccented, kCurrency, kNumeric, kBox, kLaw}) +
          Set({kEndPunctuation}) + Set({kStartPunctuation}),
      Set({kCurrency, kNumeric, kBox}) + Set({kStartPunctuation}),
      "(?<=[a-z])" + Set({kUpperAccented}) + Set({kStartPunctuation, kCurrency}),
      Set({kBox}) + Set({kKaomoji}),
      Set({kLowerAccented, kUpperAccented, kCurrency, kNumeric, kStartPunctuation, kEndPunctuation,
           kLaw}) +
          Set({kBox}),
      Set({kBox}) + Set({kEndPunctuation}),
      Set({kLowerAccented, kUpperAccented}) + Set({kStartPunctuation, kEndPunctuation}) +
          R"([\p{L}\p{N}_])",
      Set({Lit("Œœ")}) + "[^A-Za-z]",
      Set({kUpperAccented}) + Lit("°"),
      Set({Lit("ÂÃÎÐ")}) +
          Set({kStartPunctuation, kEndPunctuation}, Lit("€œŠš¢£Ÿž\u00a0\u00ad®©°·»–—´")),
      Lit("×") + Set({Lit("²³")}),
      Set({Lit("ØÙ")}) + arabic + Set({Lit("ØÙ")}) + arabic,
      Lit("à") + Set({Lit("²µ¹¼½¾")}),
      Lit("√") + Set({Lit("±∂†≠®™´≤≥¥µø")}),
      Lit("≈") + Set({Lit("°¢")}),
      Lit("‚Ä") + Set({Lit("ìîïòôúùû†°¢π")}),
      Lit("‚") + Set({Lit("âó")}) + Set({Lit("àä°ê")}),
      Lit("вЂ"),
      Set({Lit("ВГРС")}) + cyrillic_mid + Set({Lit("ВГРС")}),
      Lit("ГўВЂВ") + "[^\\n][A-Za-z ]",
      Lit("Ã") + Set({Lit("\u00a0¡")}),
      // [a-z]\s?[ÃÂ][ ]
      "(?<=[a-z])" + Set({Lit("ÃÂ")}) + "[ ]",
      "(?<=[a-z]" + space + ")" + Set({Lit("ÃÂ")}) + "[ ]",
      "(?<=[a-z.,?!" + std::string(kEndPunctuation) + "])" + Lit("Â") +
          Set({" ", kStartPunctuation, kEndPunctuation}),
      Lit("β€") + Set({Lit("™\u00a0Ά\u00ad®°")}),
      Set({Lit("ΒΓΞΟ")}) + greek_mid + Set({Lit("ΒΓΞΟ")}),
      Lit("ā€"),
  };
  std::string pattern;
  for (const std::string& alternative : alternatives) {
    if (!pattern.empty()) pattern.push_back('|');
    absl::StrAppend(&pattern, "(?:", alternative, ")");
  }
  return pattern;
}

std::string Utf8DetectorPatternText() {
  const std::string cont = Set({kUtf8Continuation});
  return absl::StrCat("(?<!", Set({kUtf8ContinuationStrict}), ")(?:", Set({kUtf8FirstOf2}), cont,
                      "|", Set({kUtf8FirstOf3}), cont, "{2}|", Set({kUtf8FirstOf4}), cont, "{3})+");
}

// Patterns over "byte strings" (UnicodeStrings of code points 0-255).
constexpr char kAlteredUtf8[] = R"([\x{c2}\x{c3}\x{c5}\x{ce}\x{d0}\x{d9}][ ])"
                                R"(|[\x{e2}\x{e3}][ ][\x{80}-\x{84}\x{86}-\x{9f}\x{a1}-\x{bf}])"
                                R"(|[\x{e0}-\x{e3}][\x{80}-\x{84}\x{86}-\x{9f}\x{a1}-\x{bf}][ ])"
                                R"(|\x{f0}[ ][\x{80}-\x{bf}][\x{80}-\x{bf}])"
                                R"(|\x{f0}[\x{80}-\x{bf}][ ][\x{80}-\x{bf}])"
                                R"(|\x{f0}[\x{80}-\x{bf}][\x{80}-\x{bf}][ ])";
constexpr char kAGraveWord[] = R"(\x{c3} (?! |quele|quela|quilo|s ))";
constexpr char kLossyUtf8[] =
    R"([\x{c2}-\x{df}]\x{1a})"
    R"(|[\x{c2}-\x{c3}][?])"
    R"(|\x{ed}[\x{a0}-\x{af}][\x{1a}?]\x{ed}[\x{b0}-\x{bf}][\x{1a}?\x{80}-\x{bf}])"
    R"(|\x{ed}[\x{a0}-\x{af}][\x{1a}?\x{80}-\x{bf}]\x{ed}[\x{b0}-\x{bf}][\x{1a}?])"
    R"(|[\x{e0}-\x{ef}][\x{1a}?][\x{1a}\x{80}-\x{bf}])"
    R"(|[\x{e0}-\x{ef}][\x{1a}\x{80}-\x{bf}][\x{1a}?])"
    R"(|[\x{f0}-\x{f4}][\x{1a}?][\x{1a}\x{80}-\x{bf}][\x{1a}\x{80}-\x{bf}])"
    R"(|[\x{f0}-\x{f4}][\x{1a}\x{80}-\x{bf}][\x{1a}?][\x{1a}\x{80}-\x{bf}])"
    R"(|[\x{f0}-\x{f4}][\x{1a}\x{80}-\x{bf}][\x{1a}\x{80}-\x{bf}][\x{1a}?])"
    R"(|\x{1a})";

// A compiled pattern with one matcher per thread (ICU matchers are not
// thread-safe; creating one per call costs more than the match). A pattern
// that fails to compile is a bug here: it then matches nothing, and the fix
// it guards is skipped rather than crashing.
class Regex {
 public:
  explicit Regex(const std::string& text) {
    UErrorCode status = U_ZERO_ERROR;
    UParseError parse_error;
    pattern_.reset(icu::RegexPattern::compile(FromUtf8(text), 0, parse_error, status));
    if (U_FAILURE(status)) pattern_.reset();
  }

  // A matcher reset to `text`, or null. Valid until the next call on this
  // thread for this pattern; `text` must outlive its use.
  icu::RegexMatcher* MatcherFor(const UnicodeString& text) const {
    if (pattern_ == nullptr) return nullptr;
    thread_local absl::flat_hash_map<const Regex*, std::unique_ptr<icu::RegexMatcher>> matchers;
    std::unique_ptr<icu::RegexMatcher>& matcher = matchers[this];
    UErrorCode status = U_ZERO_ERROR;
    if (matcher == nullptr) {
      matcher.reset(pattern_->matcher(status));
      if (U_FAILURE(status)) {
        matcher.reset();
        return nullptr;
      }
    }
    matcher->reset(text);
    return matcher.get();
  }

 private:
  std::unique_ptr<icu::RegexPattern> pattern_;
};

const Regex& BadnessRe() {
  static const Regex* const regex = new Regex(BadnessPatternText());
  return *regex;
}
const Regex& Utf8DetectorRe() {
  static const Regex* const regex = new Regex(Utf8DetectorPatternText());
  return *regex;
}
const Regex& AlteredUtf8Re() {
  static const Regex* const regex = new Regex(kAlteredUtf8);
  return *regex;
}
const Regex& AGraveWordRe() {
  static const Regex* const regex = new Regex(kAGraveWord);
  return *regex;
}
const Regex& LossyUtf8Re() {
  static const Regex* const regex = new Regex(kLossyUtf8);
  return *regex;
}

bool Search(const Regex& regex, const UnicodeString& text) {
  icu::RegexMatcher* m = regex.MatcherFor(text);
  UErrorCode status = U_ZERO_ERROR;
  return m != nullptr && m->find(status) && U_SUCCESS(status);
}

// re.sub(pattern, f(match), text).
// `f` may use other patterns (and recurse into this one), so the matches are
// collected before any replacement is computed.
template <typename F>
UnicodeString Substitute(const Regex& regex, const UnicodeString& text, F f) {
  std::vector<std::pair<int32_t, int32_t>> spans;
  if (icu::RegexMatcher* m = regex.MatcherFor(text)) {
    UErrorCode status = U_ZERO_ERROR;
    while (m->find(status) && U_SUCCESS(status)) {
      spans.emplace_back(m->start(status), m->end(status));
    }
  }
  if (spans.empty()) return text;
  UnicodeString out;
  int32_t last = 0;
  for (const auto& [start, end] : spans) {
    out.append(text, last, start - last);
    out.append(f(UnicodeString(text, start, end - start)));
    last = end;
  }
  out.append(text, last, text.length() - last);
  return out;
}

// Every alternative of BADNESS_RE needs one of these characters (the
// categories and literals it is made of, without ASCII and whitespace), so
// text without any cannot match; most non-Latin text is spared the regex.
const icu::UnicodeSet& BadnessTriggers() {
  static const icu::UnicodeSet* const set = [] {
    const std::string body = absl::StrCat(
        kCommon, kC1, kBad, kLaw, kCurrency, kStartPunctuation, kEndPunctuation, kNumeric, kKaomoji,
        kUpperAccented, kLowerAccented, kUpperCommon, kLowerCommon, kBox,
        Lit("ŒœÂÃÎÐ€œŠš¢£Ÿž\u00a0\u00ad®©°·»–—´×²³ØÙŸŠ®°µ»à²µ¹¼½¾√±∂†≠®™´≤≥¥µø≈°¢‚Äìîïòôúùû†°¢π"),
        Lit("âóàä°êвЂВГРСГўВЂВ\u00a0¡ÃÂβ€™\u00a0Ά\u00ad®°ΒΓΞΟā€"));
    UErrorCode status = U_ZERO_ERROR;
    auto* s = new icu::UnicodeSet(FromUtf8(absl::StrCat("[", body, "]")), status);
    if (U_FAILURE(status)) s->clear().complement();  // then never skip the regex
    s->freeze();
    return s;
  }();
  return *set;
}

// BADNESS_RE's one anchored alternative, "^[ÃÂ][ ]".
bool StartsBadly(const UnicodeString& text) {
  return text.length() >= 2 && (text.charAt(0) == 0xC3 || text.charAt(0) == 0xC2) &&
         text.charAt(1) == ' ';
}

bool IsBad(const UnicodeString& text) {
  if (!BadnessTriggers().containsSome(text)) return false;
  return StartsBadly(text) || Search(BadnessRe(), text);
}

// ---------------------------------------------------------------------------
// Single-byte code pages.

struct CodePageIndex {
  absl::flat_hash_map<UChar32, uint8_t> byte_of;  // for code points >= 0x80 and 0x1A's
};

const std::vector<CodePageIndex>& CodePageIndexes() {
  static const std::vector<CodePageIndex>* const indexes = [] {
    auto* v = new std::vector<CodePageIndex>();
    for (const CodePage& page : kCodePages) {
      CodePageIndex index;
      for (int b = 0x80; b < 0x100; ++b) index.byte_of.emplace(page.high[b - 0x80], b);
      index.byte_of.emplace(page.byte_1a, 0x1A);
      v->push_back(std::move(index));
    }
    return v;
  }();
  return *indexes;
}

// chardata.possible_encoding + str.encode: false if some character has no
// byte in this code page.
bool EncodeSingleByte(const UnicodeString& text, size_t page, std::string* bytes) {
  const CodePageIndex& index = CodePageIndexes()[page];
  bytes->clear();
  for (int32_t i = 0; i < text.length();) {
    const UChar32 c = text.char32At(i);
    i += U16_LENGTH(c);
    if (c < 0x80 && c != 0x1A) {
      bytes->push_back(static_cast<char>(c));
      continue;
    }
    auto it = index.byte_of.find(c);
    if (it == index.byte_of.end()) return false;
    bytes->push_back(static_cast<char>(it->second));
  }
  return true;
}

UnicodeString BytesAsLatin1(absl::string_view bytes) {
  UnicodeString out;
  for (char c : bytes) out.append(static_cast<UChar>(static_cast<uint8_t>(c)));
  return out;
}

std::string Latin1AsBytes(const UnicodeString& s) {
  std::string out;
  for (int32_t i = 0; i < s.length(); ++i) out.push_back(static_cast<char>(s.charAt(i) & 0xFF));
  return out;
}

std::string RestoreByteA0(absl::string_view bytes) {
  UnicodeString s = BytesAsLatin1(bytes);
  s = Substitute(AGraveWordRe(), s, [](const UnicodeString&) {
    return UnicodeString(static_cast<UChar>(0xC3)).append(static_cast<UChar>(0xA0)).append(' ');
  });
  s = Substitute(AlteredUtf8Re(), s, [](const UnicodeString& match) {
    UnicodeString replaced(match);
    replaced.findAndReplace(UnicodeString(static_cast<UChar>(' ')),
                            UnicodeString(static_cast<UChar>(0xA0)));
    return replaced;
  });
  return Latin1AsBytes(s);
}

std::string ReplaceLossySequences(absl::string_view bytes) {
  const UnicodeString s = Substitute(LossyUtf8Re(), BytesAsLatin1(bytes), [](const UnicodeString&) {
    return BytesAsLatin1("\xEF\xBF\xBD");
  });
  return Latin1AsBytes(s);
}

bool IsC1(char16_t c) { return c >= 0x80 && c <= 0x9F; }

UnicodeString FixC1Controls(const UnicodeString& text) {
  if (!AnyUnit(text, IsC1)) return text;
  const CodePage& windows_1252 = kCodePages[1];
  return MapCodePoints(text, [&](UChar32 c, UnicodeString* out) {
    out->append(c >= 0x80 && c <= 0x9F ? static_cast<UChar32>(windows_1252.high[c - 0x80]) : c);
  });
}

bool IsAsciiOnly(const UnicodeString& text) {
  for (int32_t i = 0; i < text.length(); ++i) {
    if (text.charAt(i) >= 0x80) return false;
  }
  return true;
}

UnicodeString FixEncoding(const UnicodeString& text);

UnicodeString DecodeInconsistentUtf8(const UnicodeString& text) {
  const int32_t length = text.countChar32();
  return Substitute(Utf8DetectorRe(), text, [&](const UnicodeString& match) {
    if (match.countChar32() < length && IsBad(match)) return FixEncoding(match);
    return match;
  });
}

// ftfy._fix_encoding_one_step_and_explain.
UnicodeString FixEncodingOneStep(const UnicodeString& text) {
  if (text.isEmpty() || IsAsciiOnly(text) || !IsBad(text)) return text;
  bool latin1_possible = false;
  std::string bytes;
  for (size_t page = 0; page < std::size(kCodePages); ++page) {
    if (!EncodeSingleByte(text, page, &bytes)) continue;
    if (page == 0) latin1_possible = true;
    const absl::string_view name = kCodePages[page].name;
    if (name != "macroman" && Search(AlteredUtf8Re(), BytesAsLatin1(bytes))) {
      bytes = RestoreByteA0(bytes);
    }
    if (kCodePages[page].sloppy) bytes = ReplaceLossySequences(bytes);
    const bool variants =
        bytes.find('\xED') != std::string::npos || bytes.find('\xC0') != std::string::npos;
    UnicodeString decoded;
    if (variants ? DecodeUtf8Variants(bytes, &decoded) : DecodeUtf8Strict(bytes, &decoded)) {
      return decoded;
    }
  }
  if (Search(Utf8DetectorRe(), text)) {
    UnicodeString fixed = DecodeInconsistentUtf8(text);
    if (fixed != text) return fixed;
  }
  if (latin1_possible) {
    // Latin-1 that was meant as (strict) Windows-1252; its five undefined
    // bytes make the decode fail.
    bool decodable = true;
    for (int32_t i = 0; i < text.length() && decodable; ++i) {
      const UChar c = text.charAt(i);
      decodable = !(c == 0x81 || c == 0x8D || c == 0x8F || c == 0x90 || c == 0x9D);
    }
    if (decodable) {
      UnicodeString fixed = FixC1Controls(text);
      if (fixed != text) return fixed;
    }
  }
  for (int32_t i = 0; i < text.length(); ++i) {
    if (text.charAt(i) >= 0x80 && text.charAt(i) <= 0x9F) return FixC1Controls(text);
  }
  return text;
}

UnicodeString FixEncoding(const UnicodeString& text) {
  UnicodeString current = text;
  while (true) {
    UnicodeString next = FixEncodingOneStep(current);
    if (next == current) return current;
    current = std::move(next);
  }
}

// ---------------------------------------------------------------------------
// The character-level fixes.

const absl::flat_hash_map<UChar32, UnicodeString>& WidthMap() {
  static const auto* const map = [] {
    auto* m = new absl::flat_hash_map<UChar32, UnicodeString>();
    m->emplace(0x3000, UnicodeString(static_cast<UChar>(' ')));
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
    if (U_FAILURE(status)) return m;
    for (UChar32 c = 0xFF01; c < 0xFFF0; ++c) {
      const UnicodeString original(c);
      UnicodeString normalized = nfkc->normalize(original, status);
      if (U_SUCCESS(status) && normalized != original) m->emplace(c, normalized);
      status = U_ZERO_ERROR;
    }
    return m;
  }();
  return *map;
}

const char* Ligature(UChar32 c) {
  switch (c) {
    case 0x0132:
      return "IJ";
    case 0x0133:
      return "ij";
    case 0x0149:
      return "\u02BCn";
    case 0x01F1:
      return "DZ";
    case 0x01F2:
      return "Dz";
    case 0x01F3:
      return "dz";
    case 0x01C4:
      return "D\u017D";
    case 0x01C5:
      return "D\u017E";
    case 0x01C6:
      return "d\u017E";
    case 0x01C7:
      return "LJ";
    case 0x01C8:
      return "Lj";
    case 0x01C9:
      return "lj";
    case 0x01CA:
      return "NJ";
    case 0x01CB:
      return "Nj";
    case 0x01CC:
      return "nj";
    case 0xFB00:
      return "ff";
    case 0xFB01:
      return "fi";
    case 0xFB02:
      return "fl";
    case 0xFB03:
      return "ffi";
    case 0xFB04:
      return "ffl";
    case 0xFB05:
      return "\u017Ft";
    case 0xFB06:
      return "st";
    default:
      return nullptr;
  }
}

UChar32 UncurlQuote(UChar32 c) {
  if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) return '\'';
  if (c >= 0x201C && c <= 0x201F) return '"';
  return c;
}

// fix_latin_ligatures, then fix_character_width, then uncurl_quotes: all three
// are per-character maps, so one pass applies them in that order.
UnicodeString FixCharacters(const UnicodeString& text) {
  const bool any = AnyUnit(text, [](char16_t c) {
    return c == 0x3000 || c >= 0xFB00 || (c >= 0x0132 && c <= 0x01F3) || c == 0x02BC ||
           (c >= 0x2018 && c <= 0x201F);
  });
  if (!any) return text;
  const auto& width = WidthMap();
  auto width_then_quotes = [&](UChar32 c, UnicodeString* out) {
    if (auto it = width.find(c); it != width.end()) {
      out->append(MapCodePoints(it->second,
                                [](UChar32 d, UnicodeString* o) { o->append(UncurlQuote(d)); }));
    } else {
      out->append(UncurlQuote(c));
    }
  };
  return MapCodePoints(text, [&](UChar32 c, UnicodeString* out) {
    if (const char* ligature = Ligature(c)) {
      const UnicodeString parts = UnicodeString::fromUTF8(ligature);
      for (int32_t i = 0; i < parts.length();) {
        const UChar32 d = parts.char32At(i);
        i += U16_LENGTH(d);
        width_then_quotes(d, out);
      }
    } else {
      width_then_quotes(c, out);
    }
  });
}

UnicodeString FixLineBreaks(const UnicodeString& text) {
  if (!AnyUnit(text,
               [](char16_t c) { return c == '\r' || c == 0x85 || c == 0x2028 || c == 0x2029; })) {
    return text;
  }
  UnicodeString out;
  for (int32_t i = 0; i < text.length(); ++i) {
    const UChar c = text.charAt(i);
    if (c == '\r') {
      out.append('\n');
      if (i + 1 < text.length() && text.charAt(i + 1) == '\n') ++i;
    } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
      out.append('\n');
    } else {
      out.append(c);
    }
  }
  return out;
}

// `\x1b\[((?:\d|;)*)([a-zA-Z])`, \d being any decimal digit.
UnicodeString RemoveTerminalEscapes(const UnicodeString& text) {
  if (text.indexOf(static_cast<UChar>(0x1B)) < 0) return text;
  UnicodeString out;
  for (int32_t i = 0; i < text.length();) {
    if (text.charAt(i) == 0x1B && i + 1 < text.length() && text.charAt(i + 1) == '[') {
      int32_t j = i + 2;
      while (j < text.length()) {
        const UChar32 c = text.char32At(j);
        if (c != ';' && u_charType(c) != U_DECIMAL_DIGIT_NUMBER) break;
        j += U16_LENGTH(c);
      }
      if (j < text.length()) {
        const UChar c = text.charAt(j);
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
          i = j + 1;
          continue;
        }
      }
    }
    out.append(text.charAt(i));
    ++i;
  }
  return out;
}

bool IsRemovedControl(UChar32 c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

UnicodeString RemoveControlChars(const UnicodeString& text) {
  if (!AnyUnit(text, [](char16_t c) { return IsRemovedControl(c); })) return text;
  return MapCodePoints(text, [](UChar32 c, UnicodeString* out) {
    if (!IsRemovedControl(c)) out->append(c);
  });
}

UnicodeString Nfc(const UnicodeString& text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) return text;
  if (nfc->isNormalized(text, status) && U_SUCCESS(status)) return text;
  status = U_ZERO_ERROR;
  UnicodeString out = nfc->normalize(text, status);
  return U_SUCCESS(status) ? out : text;
}

// ftfy.fix_and_explain for one segment (without the explanations).
UnicodeString FixSegment(UnicodeString text, bool unescape_html) {
  while (true) {
    const UnicodeString original = text;
    if (unescape_html && text.indexOf(static_cast<UChar>('&')) >= 0) {
      text = FromUtf8(FtfyUnescapeHtml(ToUtf8(text)));
    }
    text = FixEncoding(text);
    text = FixC1Controls(text);
    text = FixCharacters(text);
    text = FixLineBreaks(text);
    text = RemoveTerminalEscapes(text);
    text = RemoveControlChars(text);
    text = Nfc(text);
    if (text == original) return text;
  }
}

// Bytes that make every ftfy and html.unescape step a no-op, except for line
// breaks and whitespace, which both cleanings collapse anyway.
bool IsPlainAscii(absl::string_view text) {
  for (char ch : text) {
    const auto c = static_cast<uint8_t>(ch);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\f' && c != '\r') || c >= 0x7F || c == '&') {
      return false;
    }
  }
  return true;
}

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; }

// whitespace_clean (and optionally lower) of plain ASCII text.
std::string CleanPlainAscii(absl::string_view text, bool lower) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    if (IsAsciiSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(lower && c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
  }
  return out;
}

std::string FixTextValid(absl::string_view text) {
  if (IsPlainAscii(text)) {
    std::string out(text);
    // fix_line_breaks is the only ftfy step that changes plain ASCII.
    if (out.find('\r') == std::string::npos) return out;
    return ToUtf8(FixLineBreaks(FromUtf8(out)));
  }
  const UnicodeString all = FromUtf8(text);
  constexpr int32_t kMaxSegmentCodePoints = 1000000;
  std::string out;
  bool unescape_html = true;
  int32_t pos = 0;
  while (pos < all.length()) {
    int32_t end = all.indexOf(static_cast<UChar>('\n'), pos);
    end = end < 0 ? all.length() : end + 1;
    if (end - pos > kMaxSegmentCodePoints) {  // more UTF-16 units than code points
      end = std::min(end, all.moveIndex32(pos, kMaxSegmentCodePoints));
    }
    const UnicodeString segment(all, pos, end - pos);
    if (unescape_html && segment.indexOf(static_cast<UChar>('<')) >= 0) unescape_html = false;
    absl::StrAppend(&out, ToUtf8(FixSegment(segment, unescape_html)));
    pos = end;
  }
  return out;
}

// Python's str.strip() on valid UTF-8.
std::string PythonStrip(absl::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    char32_t cp;
    bool valid;
    const size_t n = DecodeUtf8Char(text, begin, &cp, &valid);
    if (!IsPythonSpace(cp)) break;
    begin += n;
  }
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    char32_t cp;
    bool valid;
    DecodeUtf8Char(text, start, &cp, &valid);
    if (!IsPythonSpace(cp)) break;
    end = start;
  }
  return std::string(text.substr(begin, end - begin));
}

std::string BasicCleanValid(absl::string_view text) {
  return PythonStrip(HtmlUnescapeValid(HtmlUnescapeValid(FixTextValid(text))));
}

std::string WhitespaceCleanValid(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool in_space = false;
  for (size_t i = 0; i < text.size();) {
    char32_t cp;
    bool valid;
    const size_t n = DecodeUtf8Char(text, i, &cp, &valid);
    if (IsRegexWhitespace(cp)) {
      if (!in_space) out.push_back(' ');
      in_space = true;
    } else {
      out.append(text.data() + i, n);
      in_space = false;
    }
    i += n;
  }
  return PythonStrip(out);
}

std::string PythonLowerValid(absl::string_view text) {
  bool ascii = true;
  for (char c : text) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
  if (ascii) {
    std::string out(text);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
    return out;
  }
  UnicodeString u = FromUtf8(text);
  u.toLower(icu::Locale::getRoot());
  return ToUtf8(u);
}

}  // namespace

bool IsRegexWhitespace(char32_t c) {
  if (c <= 0x20) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool IsPythonSpace(char32_t c) { return IsRegexWhitespace(c) || (c >= 0x1C && c <= 0x1F); }

std::string ToValidUtf8(absl::string_view bytes) {
  if (IsValidUtf8(bytes)) return std::string(bytes);
  std::string out;
  out.reserve(bytes.size() + 8);
  for (size_t i = 0; i < bytes.size();) {
    char32_t cp;
    bool valid;
    const size_t n = DecodeUtf8Char(bytes, i, &cp, &valid);
    if (valid) {
      out.append(bytes.data() + i, n);
    } else {
      AppendUtf8(0xFFFD, &out);
    }
    i += n;
  }
  return out;
}

std::string HtmlUnescape(absl::string_view text) { return HtmlUnescapeValid(ToValidUtf8(text)); }

std::string FixText(absl::string_view text) { return FixTextValid(ToValidUtf8(text)); }

std::string BasicClean(absl::string_view text) { return BasicCleanValid(ToValidUtf8(text)); }

std::string WhitespaceClean(absl::string_view text) {
  return WhitespaceCleanValid(ToValidUtf8(text));
}

std::string PythonLower(absl::string_view text) { return PythonLowerValid(ToValidUtf8(text)); }

std::string CleanLower(absl::string_view text) {
  if (IsPlainAscii(text)) return CleanPlainAscii(text, /*lower=*/true);
  return PythonLowerValid(WhitespaceCleanValid(BasicCleanValid(ToValidUtf8(text))));
}

std::string CleanWhitespace(absl::string_view text) {
  if (IsPlainAscii(text)) return CleanPlainAscii(text, /*lower=*/false);
  return WhitespaceCleanValid(BasicCleanValid(ToValidUtf8(text)));
}

}  // namespace oclip
