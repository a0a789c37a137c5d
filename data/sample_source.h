// The common shape of every data source: a Sample (one image with its caption
// and metadata), failure accounting, and the SampleSource iterator that the
// embedding job (`oclip embed`) and training consume without caring whether
// the samples come from webdataset tars, a CSV file or an image folder.
//
// Error model. A bad item never stops a source: a missing image file, a corrupt
// or truncated tar shard, a failing `pipe:` command are counted by
// FailureKind in the source's stats (and logged as warnings), and iteration
// goes on with the next row / file / shard. Next() returns an error status
// only when going on is pointless (the caller's misuse or our own bug), so a
// job normally runs to the end and then reports stats().
//
// Samples hold the encoded image bytes; decoding is the consumer's business
// (data/ has no image codecs). A consumer that fails to decode an image may
// record that as FailureKind::kUnreadableImage in its own SourceStats.
//
// Thread safety: a SampleSource is used by one thread at a time (it is a
// cursor); distinct sources are independent. SourceStats is a plain value.

#ifndef OCLIP_DATA_SAMPLE_SOURCE_H_
#define OCLIP_DATA_SAMPLE_SOURCE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oclip {

struct Sample {
  // Webdataset: the member path up to the first '.' of its basename
  // ("00000/000000123"). CSV: the image column as written in the file.
  // Image folder: the path relative to the root without its extension.
  std::string key;
  // The encoded image (JPEG, PNG, ...), or empty when the source was told not
  // to read image files (then `image_path` names the file).
  std::string image;
  // Lower-case extension of the image member/file without the dot ("jpg").
  std::string image_extension;
  // The image's file path for CSV and image-folder samples (absolute or
  // relative to the working directory); empty for webdataset samples.
  std::string image_path;
  // The caption text (webdataset `.txt`, the CSV caption column, an image
  // folder's sidecar KEY.txt); `has_caption` tells an empty caption from none.
  std::string caption;
  bool has_caption = false;
  // The `.json` member's text as stored (not parsed); empty when absent.
  std::string metadata_json;
  // The shard the sample came from as the caller named it (a path or a
  // `pipe:` spec), the CSV file, or the image folder's root.
  std::string shard;
  // 0-based position of the sample in its shard. For webdataset it counts
  // every key group, including groups skipped for being incomplete, so it is
  // stable whatever the filtering options; for CSV it counts data rows; for
  // image folders, image files in walk order.
  int64_t index_in_shard = 0;

  // Empties every field, keeping string capacity for reuse.
  void Clear();
};

// Why an item was skipped. Names (FailureKindName) are stable: they appear in
// logs and job reports.
enum class FailureKind {
  kMissingFile,       // "missing_file": a shard, CSV row's image or file is absent.
  kUnreadableFile,    // "unreadable_file": it exists but cannot be read.
  kCorruptArchive,    // "corrupt_archive": not a tar, or a damaged header/member.
  kTruncated,         // "truncated": the archive ends in the middle of a member.
  kCommandFailed,     // "command_failed": a `pipe:` command exited non-zero.
  kIncompleteSample,  // "incomplete_sample": no image (or no caption, if required).
  kDuplicateMember,   // "duplicate_member": KEY.ext twice in one sample.
  kOversizedMember,   // "oversized_member": a member above the size limit.
  kMalformedRow,      // "malformed_row": a CSV row with too few fields / bad quoting.
  kUnreadableImage,   // "unreadable_image": the consumer could not decode it.
};
inline constexpr int kNumFailureKinds = 10;

absl::string_view FailureKindName(FailureKind kind);

// Counts for one shard (a tar, a CSV file, an image folder).
struct ShardStats {
  std::string shard;
  int64_t samples = 0;  // Samples delivered by Next().
  std::array<int64_t, kNumFailureKinds> failures{};
  // OK, or the error that ended the shard early (its kind is counted above).
  absl::Status status;

  int64_t failure_count(FailureKind kind) const { return failures[static_cast<int>(kind)]; }
  int64_t total_failures() const;
  void AddFailure(FailureKind kind, int64_t count = 1) {
    failures[static_cast<int>(kind)] += count;
  }
  // "samples=12 truncated=1" (zero counts omitted), for logs.
  std::string ToString() const;
};

// Counts for a whole source: running totals (including the shard being read)
// plus one entry per finished shard, in the order they finished.
struct SourceStats {
  int64_t samples = 0;
  std::array<int64_t, kNumFailureKinds> failures{};
  std::vector<ShardStats> shards;

  int64_t failure_count(FailureKind kind) const { return failures[static_cast<int>(kind)]; }
  int64_t total_failures() const;
  void AddFailure(FailureKind kind, int64_t count = 1) {
    failures[static_cast<int>(kind)] += count;
  }
  // Appends a finished shard; the totals are not touched (sources keep them
  // up to date as they go, so that progress reports see the current shard).
  void AddShard(ShardStats shard) { shards.push_back(std::move(shard)); }
  std::string ToString() const;
};

class SampleSource {
 public:
  virtual ~SampleSource() = default;

  // Fills `*sample` (overwriting it) and returns true, or returns false when
  // the source is exhausted (and keeps returning false). Failed items are
  // counted and skipped, never returned as errors; an error status means the
  // source cannot go on at all.
  virtual absl::StatusOr<bool> Next(Sample* sample) = 0;

  // Counts so far; complete once Next() has returned false. A shard's entry
  // in stats().shards appears when the shard is finished.
  virtual const SourceStats& stats() const = 0;
};

// Calls `fn` for every remaining sample of `source`. Stops at the first
// non-OK status from `fn` or from the source and returns it.
absl::Status ForEachSample(SampleSource& source, const std::function<absl::Status(Sample&)>& fn);

}  // namespace oclip

#endif  // OCLIP_DATA_SAMPLE_SOURCE_H_
