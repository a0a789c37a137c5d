// Byte-level byte-pair encoding, the machinery shared by the CLIP tokenizer
// (clip_tokenizer.h) and the RoBERTa / GPT-2 tokenizer (hf_bpe_tokenizer.h).
//
// Both tokenizers first map every byte of a pre-token to a printable character
// with GPT-2's byte table (ByteToUnicode*), then merge adjacent symbols in the
// order of a merges list: repeatedly take the adjacent pair with the lowest
// rank and merge all of its non-overlapping occurrences left to right, until no
// adjacent pair is ranked. CLIP additionally marks the last symbol of each word
// with the suffix "</w>". This is the exact algorithm of OpenCLIP's
// `SimpleTokenizer.bpe` and of HF's `GPT2Tokenizer.bpe`, including their tie
// rules (a merge pair listed twice keeps its later rank, as a Python dict built
// from the list does).
//
// Errors: only Create() fails (INVALID_ARGUMENT when a merge's result or a base
// symbol has no id and no unknown id is configured). Encoding never fails: any
// byte sequence, invalid UTF-8 included, encodes to ids.
//
// Thread safety: a BytePairEncoder is immutable after Create() except for its
// word cache, which is internally synchronized (sharded absl::Mutex). All const
// methods may be called concurrently.

#ifndef OCLIP_MODEL_TOKENIZER_BPE_H_
#define OCLIP_MODEL_TOKENIZER_BPE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace oclip {

// GPT-2's byte table: bytes 33-126, 161-172 and 174-255 map to the code point
// of the same value; the other 68 bytes, in increasing order, map to U+0100,
// U+0101, ... U+0143.
char32_t ByteToUnicodeCodePoint(uint8_t byte);

// The UTF-8 encoding of ByteToUnicodeCodePoint(byte) (1 or 2 bytes). The view
// points to static storage.
absl::string_view ByteToUnicodeUtf8(uint8_t byte);

// The 256 byte characters in the table's order of code points (the order
// OpenCLIP lists them in its vocabulary: "!" first, U+0143 last).
const std::array<uint8_t, 256>& BytesInTableOrder();

// Maps raw bytes to their byte-level string (UTF-8).
std::string BytesToUnicode(absl::string_view bytes);

// The inverse of BytesToUnicode. Characters outside the table (and invalid
// UTF-8) are appended as U+FFFD's UTF-8 bytes, like Python's
// `bytearray(...).decode('utf-8', errors='replace')` callers expect. Returns
// false if any such character was met.
bool UnicodeToBytes(absl::string_view text, std::string* bytes);

// Character classes of the pre-tokenizer regexes: the `regex` module's \s
// (White_Space), \p{L} and \p{N} (ICU's general categories).
enum class CharClass : uint8_t { kSpace, kLetter, kNumber, kOther };

// Class of the code point starting at text[*i]; advances *i past it. Expects
// valid UTF-8 (an invalid byte counts as kOther, one byte long).
CharClass NextCharClass(absl::string_view text, size_t* i);

// Vocabulary file formats shared by the BPE tokenizers. `source` names the
// file in error messages. Both fail with DATA_LOSS on malformed input.

// An HF `vocab.json`: a JSON object of piece -> integer id.
absl::StatusOr<absl::flat_hash_map<std::string, int32_t>> ParseVocabJson(absl::string_view json,
                                                                         absl::string_view source);

// Merges, one "left right" pair per line. Skips the first line when
// `skip_first_line` (CLIP's header) or when it starts with "#version" (HF's),
// and empty lines; reads at most `max_merges` pairs.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseMerges(
    absl::string_view text, absl::string_view source, bool skip_first_line,
    size_t max_merges = static_cast<size_t>(-1));

class BytePairEncoder {
 public:
  struct Options {
    // Appended to the last symbol of every word ("</w>" for CLIP, "" for
    // GPT-2 / RoBERTa).
    std::string end_of_word_suffix;
    // Id given to pieces that the vocabulary lacks (RoBERTa's <unk>). Negative:
    // every base symbol and every merge result must have an id, checked by
    // Create().
    int32_t unknown_id = -1;
    // Cached words, in total over all shards; 0 disables the cache. When a
    // shard is full it is cleared (the cache only saves work).
    size_t cache_capacity = 1 << 18;
    // Longer words (in bytes) are not cached.
    size_t max_cached_word_bytes = 64;
    // Words of more symbols than this use the O(n log n) heap merge instead of
    // the quadratic scan; both give the same result.
    size_t heap_merge_threshold = 48;
  };

  // `vocab`: piece (in byte-level form, e.g. "Ġthe" or "the</w>") -> id.
  // `merges`: pairs of pieces, in rank order (rank = index).
  static absl::StatusOr<std::unique_ptr<BytePairEncoder>> Create(
      const absl::flat_hash_map<std::string, int32_t>& vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, Options options);

  BytePairEncoder(const BytePairEncoder&) = delete;
  BytePairEncoder& operator=(const BytePairEncoder&) = delete;
  ~BytePairEncoder();

  // Appends the ids of the pieces of one pre-token, given as raw bytes.
  void Encode(absl::string_view word, std::vector<int32_t>* ids) const;

  // The pieces of one pre-token in byte-level form (e.g. "cafÃ©</w>").
  std::vector<std::string> Pieces(absl::string_view word) const;

  // Id of a piece in byte-level form, or unknown_id if absent.
  int32_t PieceId(absl::string_view piece) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t result;  // symbol index
  };
  struct CacheShard;
  static constexpr size_t kCacheShards = 16;

  explicit BytePairEncoder(Options options);

  int32_t InternSymbol(const std::string& text);
  // Splits `word` into base symbols and merges them; the result is a list of
  // symbol indices.
  void MergeWord(absl::string_view word, std::vector<int32_t>* symbols) const;
  void MergeByScan(std::vector<int32_t>* symbols) const;
  void MergeByHeap(std::vector<int32_t>* symbols) const;
  const Merge* FindMerge(int32_t left, int32_t right) const;
  // Symbols of `word`, from the cache when possible.
  void Symbols(absl::string_view word, std::vector<int32_t>* symbols) const;

  Options options_;
  // Symbol index -> its text and its output id.
  std::vector<std::string> symbol_text_;
  std::vector<int32_t> symbol_id_;
  absl::flat_hash_map<std::string, int32_t> symbol_index_;
  // Base symbols per byte value, without and with the end-of-word suffix.
  std::array<int32_t, 256> base_symbol_{};
  std::array<int32_t, 256> base_symbol_end_{};
  // (left symbol << 32 | right symbol) -> merge.
  absl::flat_hash_map<uint64_t, Merge> merges_;
  // Rank -> the pair it merges (for the heap merge's validity checks).
  std::vector<std::pair<int32_t, int32_t>> rank_pairs_;
  // Piece text -> output id (the vocabulary as given).
  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::unique_ptr<CacheShard[]> cache_;
};

}  // namespace oclip

#endif  // OCLIP_MODEL_TOKENIZER_BPE_H_
