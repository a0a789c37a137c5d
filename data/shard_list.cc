#include "data/shard_list.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace oclip {
namespace {

struct Node;
using Sequence = std::vector<Node>;

// A pattern is parsed into a tree first so that the expanded size can be
// checked against kMaxShards before anything is allocated.
struct Node {
  enum class Kind { kLiteral, kAlternatives, kRange } kind = Kind::kLiteral;
  std::string literal;
  std::vector<Sequence> alternatives;
  int64_t first = 0, last = 0, step = 1;
  int width = 0;  // Zero padding of range values; 0 = none.
};

absl::Status Malformed(absl::string_view pattern, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("shard pattern \"", pattern, "\": ", why));
}

class Parser {
 public:
  explicit Parser(absl::string_view pattern) : pattern_(pattern) {}

  absl::StatusOr<Sequence> ParseAll() {
    OCLIP_ASSIGN_OR_RETURN(Sequence sequence, ParseSequence(/*depth=*/0));
    if (pos_ != pattern_.size()) {
      return Malformed(pattern_, absl::StrCat("unmatched '", std::string(1, pattern_[pos_]),
                                              "' at offset ", pos_));
    }
    return sequence;
  }

 private:
  // Reads literals and groups up to the end, or (inside a group) up to the
  // ',' or '}' that ends the current alternative.
  absl::StatusOr<Sequence> ParseSequence(int depth) {
    Sequence sequence;
    std::string literal;
    auto flush = [&] {
      if (literal.empty()) return;
      Node node;
      node.literal = std::move(literal);
      sequence.push_back(std::move(node));
      literal.clear();
    };
    while (pos_ < pattern_.size()) {
      const char c = pattern_[pos_];
      if (c == '\\') {
        if (pos_ + 1 == pattern_.size()) return Malformed(pattern_, "trailing backslash");
        literal += pattern_[pos_ + 1];
        pos_ += 2;
      } else if (c == '{') {
        flush();
        OCLIP_ASSIGN_OR_RETURN(Node group, ParseGroup(depth + 1));
        sequence.push_back(std::move(group));
      } else if (depth > 0 && (c == ',' || c == '}')) {
        break;
      } else if (c == '}') {
        return Malformed(pattern_, absl::StrCat("unmatched '}' at offset ", pos_));
      } else {
        literal += c;
        ++pos_;
      }
    }
    flush();
    return sequence;
  }

  // At '{': a numeric range or a comma list of (possibly nested) sequences.
  absl::StatusOr<Node> ParseGroup(int depth) {
    const size_t open = pos_++;
    const size_t close = FindClose(open);
    if (close == absl::string_view::npos) {
      return Malformed(pattern_, absl::StrCat("unmatched '{' at offset ", open));
    }
    const absl::string_view body = pattern_.substr(open + 1, close - open - 1);
    if (body.find("..") != absl::string_view::npos &&
        body.find_first_of("{},\\") == absl::string_view::npos) {
      pos_ = close + 1;
      return ParseRange(body);
    }
    Node node;
    node.kind = Node::Kind::kAlternatives;
    while (true) {
      OCLIP_ASSIGN_OR_RETURN(Sequence alternative, ParseSequence(depth));
      node.alternatives.push_back(std::move(alternative));
      if (pos_ >= pattern_.size()) {
        return Malformed(pattern_, absl::StrCat("unmatched '{' at offset ", open));
      }
      if (pattern_[pos_++] == '}') break;  // Otherwise it was ','.
    }
    if (node.alternatives.size() < 2) {
      return Malformed(pattern_, absl::StrCat("'{", body,
                                              "}' is neither a range (A..B) nor a "
                                              "comma list; escape literal braces as \\{ \\}"));
    }
    return node;
  }

  // The offset of the '}' matching the '{' at `open`, or npos.
  size_t FindClose(size_t open) const {
    int depth = 0;
    for (size_t i = open; i < pattern_.size(); ++i) {
      if (pattern_[i] == '\\') {
        ++i;
      } else if (pattern_[i] == '{') {
        ++depth;
      } else if (pattern_[i] == '}' && --depth == 0) {
        return i;
      }
    }
    return absl::string_view::npos;
  }

  absl::StatusOr<Node> ParseRange(absl::string_view body) {
    const std::vector<absl::string_view> parts = absl::StrSplit(body, "..");
    if (parts.size() != 2 && parts.size() != 3) {
      return Malformed(pattern_, absl::StrCat("bad range '{", body, "}'"));
    }
    int64_t values[3] = {0, 0, 1};
    for (size_t i = 0; i < parts.size(); ++i) {
      const absl::string_view part = parts[i];
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
        return absl::ascii_isdigit(static_cast<unsigned char>(c));
      });
      if (!digits || part.size() > 18 || !absl::SimpleAtoi(part, &values[i])) {
        return Malformed(pattern_,
                         absl::StrCat("bad range '{", body, "}': expected non-negative integers"));
      }
    }
    Node node;
    node.kind = Node::Kind::kRange;
    node.first = values[0];
    node.last = values[1];
    node.step = values[2];
    if (node.step == 0) return Malformed(pattern_, absl::StrCat("zero step in '{", body, "}'"));
    if (node.first > node.last) {
      return Malformed(pattern_, absl::StrCat("reversed range '{", body, "}'"));
    }
    // braceexpand pads when either endpoint has a leading zero ("0" alone
    // does not count), to the wider endpoint's width.
    auto padded = [](absl::string_view s) { return s.size() > 1 && s[0] == '0'; };
    if (padded(parts[0]) || padded(parts[1])) {
      node.width = static_cast<int>(std::max(parts[0].size(), parts[1].size()));
    }
    return node;
  }

  absl::string_view pattern_;
  size_t pos_ = 0;
};

// Saturates at kMaxShards + 1 so that products cannot overflow.
int64_t Count(const Sequence& sequence);

int64_t Count(const Node& node) {
  switch (node.kind) {
    case Node::Kind::kLiteral:
      return 1;
    case Node::Kind::kRange:
      return std::min<int64_t>((node.last - node.first) / node.step + 1, kMaxShards + 1);
    case Node::Kind::kAlternatives: {
      int64_t total = 0;
      for (const Sequence& alternative : node.alternatives) {
        total = std::min<int64_t>(total + Count(alternative), kMaxShards + 1);
      }
      return total;
    }
  }
  return 0;
}

int64_t Count(const Sequence& sequence) {
  int64_t total = 1;
  for (const Node& node : sequence) {
    const int64_t n = Count(node);
    if (n == 0) return 0;
    total = total > (kMaxShards + 1) / n ? kMaxShards + 1 : total * n;
  }
  return total;
}

void Expand(const Sequence& sequence, std::vector<std::string>* out);

// The values one node stands for, in order.
std::vector<std::string> Values(const Node& node) {
  std::vector<std::string> values;
  switch (node.kind) {
    case Node::Kind::kLiteral:
      values.push_back(node.literal);
      break;
    case Node::Kind::kRange:
      for (int64_t v = node.first; v <= node.last; v += node.step) {
        values.push_back(absl::StrFormat("%0*d", node.width, v));
        if (node.last - v < node.step) break;  // v += step would overflow past last.
      }
      break;
    case Node::Kind::kAlternatives:
      for (const Sequence& alternative : node.alternatives) Expand(alternative, &values);
      break;
  }
  return values;
}

// Appends the cartesian product of `sequence`'s nodes, left-most slowest.
void Expand(const Sequence& sequence, std::vector<std::string>* out) {
  std::vector<std::string> prefixes = {""};
  for (const Node& node : sequence) {
    const std::vector<std::string> values = Values(node);
    std::vector<std::string> next;
    next.reserve(prefixes.size() * values.size());
    for (const std::string& prefix : prefixes) {
      for (const std::string& value : values) next.push_back(prefix + value);
    }
    prefixes = std::move(next);
  }
  out->insert(out->end(), std::make_move_iterator(prefixes.begin()),
              std::make_move_iterator(prefixes.end()));
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandShardList(absl::string_view spec) {
  if (spec.empty()) return absl::InvalidArgumentError("empty shard list");
  std::vector<Sequence> parts;
  int64_t total = 0;
  for (absl::string_view part : absl::StrSplit(spec, "::")) {
    if (part.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard list \"", spec, "\" has an empty \"::\"-separated part"));
    }
    OCLIP_ASSIGN_OR_RETURN(Sequence sequence, Parser(part).ParseAll());
    total += Count(sequence);
    if (total > kMaxShards) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard list \"", spec, "\" expands to more than ", kMaxShards, " shards"));
    }
    parts.push_back(std::move(sequence));
  }
  std::vector<std::string> shards;
  shards.reserve(static_cast<size_t>(total));
  for (const Sequence& sequence : parts) Expand(sequence, &shards);
  return shards;
}

absl::StatusOr<std::vector<std::string>> ShardsForWorker(const std::vector<std::string>& shards,
                                                         int worker_index, int num_workers) {
  if (num_workers <= 0 || worker_index < 0 || worker_index >= num_workers) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker index ", worker_index, " is not in [0, ", num_workers, ")"));
  }
  std::vector<std::string> mine;
  for (size_t i = static_cast<size_t>(worker_index); i < shards.size();
       i += static_cast<size_t>(num_workers)) {
    mine.push_back(shards[i]);
  }
  return mine;
}

}  // namespace oclip
