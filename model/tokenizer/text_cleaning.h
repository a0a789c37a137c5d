// Text cleaning exactly as OpenCLIP's tokenizers do it before tokenizing
// (`v2.23.0:src/open_clip/tokenizer.py`):
//
//   basic_clean(t)      = html.unescape(html.unescape(ftfy.fix_text(t))).strip()
//   whitespace_clean(t) = re.sub(r"\s+", " ", t).strip()
//   'lower' (CLIP)      = whitespace_clean(basic_clean(t)).lower()
//   'whitespace' (HF)   = whitespace_clean(basic_clean(t))
//
// All functions take arbitrary bytes: invalid UTF-8 is first replaced by U+FFFD
// per maximal invalid subsequence (Python's `errors="replace"`), so they never
// fail and always return valid UTF-8. Pure functions of their input; safe to
// call from any thread. ASCII text without '&' or control characters takes a
// fast path that never touches ICU.
//
// FixText() re-implements ftfy 6.3's `fix_text` with default options:
//  - segments: lines (each with its '\n'), split further every 1,000,000 code
//    points; HTML unescaping ("auto") is turned off from the first segment that
//    contains '<' on;
//  - per segment, repeated until nothing changes: ftfy's own HTML unescaping
//    (entities ending in ';', numeric references, all-caps Latin names such as
//    "&EACUTE;"), fix_encoding, C1 controls as Windows-1252, Latin ligatures
//    (ﬁ -> fi), full-/half-width forms (U+3000 and U+FF01-U+FFEF via NFKC),
//    curly quotes (U+02BC, U+2018-U+201B -> ', U+201C-U+201F -> "), line breaks
//    (CRLF, CR, U+2028, U+2029, U+0085 -> LF), ANSI terminal escapes, control
//    characters (U+0000-0008, 000B, 000E-001F, 007F, 206A-206F, FEFF,
//    FFF9-FFFC), then NFC;
//  - fix_encoding: only for text that ftfy's "badness" heuristic flags (a port
//    of ftfy's BADNESS_RE); re-encodes the whole segment in the first of
//    latin-1, sloppy-windows-1252/1251/1250/1253/1254/1257, iso-8859-2,
//    macroman, cp437 that can encode it and decodes it as UTF-8 (or ftfy's
//    "utf-8-variants": CESU-8 surrogate pairs, C0 80), with ftfy's
//    restore_byte_a0 and replace_lossy_sequences transcoders; otherwise
//    decodes embedded UTF-8 mojibake piecewise (decode_inconsistent_utf8), then
//    maps C1 controls through Windows-1252; repeated until stable. So
//    "cafÃ© naÃ¯ve" -> "café naïve" while "naïve café résumé" is untouched.
//
// Known gaps vs ftfy: fix_surrogates is not needed (UTF-8 input cannot carry
// UTF-16 surrogates); Unicode data comes from ICU (Unicode 15 on Debian 12)
// rather than from Python's unicodedata, so characters assigned in between can
// normalize or case differently; ftfy's regexes use Python's `\w` and `\s`,
// approximated here by [\p{L}\p{N}_] and str.isspace()'s set. The port
// follows ftfy 6.3.1's source (its tables are in text_cleaning_data.inc,
// generated with Python 3.11's html.entities, codecs and unicodedata) and is
// checked against ftfy's documented examples and OpenCLIP's reference outputs,
// not against ftfy itself on a corpus; ftfy's `explain` plans, its
// "utf-8-variants" handling of incomplete sequences at the end of a stream and
// its MacRoman line-break guessing (guess_bytes) are not reproduced.

#ifndef OCLIP_MODEL_TOKENIZER_TEXT_CLEANING_H_
#define OCLIP_MODEL_TOKENIZER_TEXT_CLEANING_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace oclip {

// Decodes the UTF-8 character at byte `i` of `s` (i < s.size()). Returns its
// length, or for malformed input the length of the maximal invalid prefix
// (>= 1) with *cp = U+FFFD and *valid = false. Overlong forms, surrogates and
// code points above U+10FFFF are malformed.
size_t DecodeUtf8Char(absl::string_view s, size_t i, char32_t* cp, bool* valid);

// Valid UTF-8: `bytes` with each maximal invalid subsequence replaced by
// U+FFFD, as Python's bytes.decode("utf-8", errors="replace").
std::string ToValidUtf8(absl::string_view bytes);

// Python's html.unescape (HTML5 named references, with the longest-prefix rule
// for names without ';', and numeric references with HTML5's substitutions).
std::string HtmlUnescape(absl::string_view text);

// ftfy.fix_text(text) with default options; see the file comment.
std::string FixText(absl::string_view text);

// OpenCLIP's basic_clean: FixText, HtmlUnescape twice, Python str.strip().
std::string BasicClean(absl::string_view text);

// OpenCLIP's whitespace_clean: every run of Unicode whitespace (the `regex`
// module's \s, i.e. White_Space) becomes one space; then str.strip().
std::string WhitespaceClean(absl::string_view text);

// Python's str.lower(): full Unicode lower-casing (SpecialCasing, final sigma).
std::string PythonLower(absl::string_view text);

// OpenCLIP's clean="lower" (CLIP's SimpleTokenizer default).
std::string CleanLower(absl::string_view text);

// OpenCLIP's clean="whitespace" (its HF tokenizer wrapper): no lower-casing.
std::string CleanWhitespace(absl::string_view text);

// The `regex` module's \s: the White_Space property.
bool IsRegexWhitespace(char32_t c);

// Python's str.isspace() for one character (\s plus U+001C-U+001F).
bool IsPythonSpace(char32_t c);

}  // namespace oclip

#endif  // OCLIP_MODEL_TOKENIZER_TEXT_CLEANING_H_
