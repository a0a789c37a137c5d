// Shard lists as webdataset and OpenCLIP's `--train-data` write them:
// brace patterns expanded the way Python's `braceexpand` does, and several
// sources joined with "::".
//
//   "/data/{00000..00003}.tar"        -> /data/00000.tar ... /data/00003.tar
//   "s3/{a,b}/{0..1}.tar"             -> s3/a/0.tar s3/a/1.tar s3/b/0.tar s3/b/1.tar
//   "x/{0..10..5}.tar"                -> x/0.tar x/5.tar x/10.tar (a step)
//   "a.tar::b/{1..2}.tar"             -> a.tar b/1.tar b/2.tar
//   "pipe:curl -s http://h/{0..1}.tar" -> one `pipe:` spec per shard
//
// Rules: a numeric range is zero-padded to the wider endpoint when either
// endpoint has a leading zero ("{8..010}" -> 008 009 010); alternatives may
// nest ("{a,{b,c}}"); the left-most brace varies slowest; a backslash makes
// the next character literal ("\{" "\}" "\," "\\"). Stricter than braceexpand,
// which passes malformed braces through literally and counts down reversed
// ranges: here those are INVALID_ARGUMENT, because a shard list with a typo
// should fail before a job starts rather than silently read the wrong files.
//
// Errors: INVALID_ARGUMENT for an empty spec or empty "::" part, unbalanced
// braces, "{}" or "{x}" (a group with one alternative and no range), a
// reversed range, a zero step, numbers over 18 digits, and lists longer than
// kMaxShards. Pure functions; thread-safe.

#ifndef OCLIP_DATA_SHARD_LIST_H_
#define OCLIP_DATA_SHARD_LIST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oclip {

// The most shards one spec may expand to (a guard against a pattern such as
// "{0..99999999999}" allocating the machine's memory).
inline constexpr int64_t kMaxShards = 10'000'000;

// Expands `spec` ("::"-separated brace patterns) into shard names, in order.
// Duplicates are kept (as webdataset keeps them).
absl::StatusOr<std::vector<std::string>> ExpandShardList(absl::string_view spec);

// The shards worker `worker_index` of `num_workers` reads: every
// num_workers-th shard starting at worker_index, as webdataset's
// split_by_worker does (`urls[worker_index::num_workers]`). INVALID_ARGUMENT
// unless 0 <= worker_index < num_workers.
absl::StatusOr<std::vector<std::string>> ShardsForWorker(const std::vector<std::string>& shards,
                                                         int worker_index, int num_workers);

}  // namespace oclip

#endif  // OCLIP_DATA_SHARD_LIST_H_
