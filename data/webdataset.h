// Samples of webdataset tar shards, as img2dataset writes them: the members
// of one sample are consecutive and share a key (KEY.jpg, KEY.txt,
// KEY.json, ...). Follows webdataset's tar expansion and group_by_keys:
//   - only regular files count; top-level "__name__" members are skipped;
//   - a member path splits like webdataset's base_plus_ext: the key is the
//     whole path up to the first '.' of the basename, the extension is the
//     rest, lower-cased ("a/b/000123.Image.JPG" -> key "a/b/000123",
//     extension "image.jpg"); a basename without a '.' (or starting with one)
//     is skipped;
//   - a new key starts a new sample (so a key whose members are not
//     consecutive yields several samples, as in webdataset).
// Members are matched by their whole extension: the first of
// `image_extensions` present is the image, "txt" the caption, "json" the
// metadata; other members are skipped without being read.
//
// Shards are read streaming through libarchive from a ByteSource (a path or
// a `pipe:` command); gzip/bzip2/xz/zstd-compressed tars are accepted.
//
// Failures (counted in ShardStats, see data/sample_source.h):
//   - a group with no image (or no caption when required): incomplete_sample;
//   - KEY.ext twice in one group: duplicate_member (the first is kept);
//   - a wanted member over max_member_bytes: oversized_member (the group is
//     dropped);
//   - a shard that cannot be opened: missing_file / unreadable_file /
//     command_failed;
//   - a shard that ends in the middle of a member: truncated; one that is not
//     a tar or has a damaged header: corrupt_archive; a `pipe:` command that
//     exits non-zero: command_failed (even when the tar looked complete).
//   When a shard fails, every sample read before the failure is delivered
//   first, including the group being read when it failed if the members read
//   in full make a sample (as with webdataset's tolerant handlers: a member
//   cut short is never part of a sample, but a sample may lack a member that
//   the failure swallowed, e.g. its caption).
//
// Thread safety: one thread at a time per reader / source.

#ifndef OCLIP_DATA_WEBDATASET_H_
#define OCLIP_DATA_WEBDATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "data/byte_source.h"
#include "data/sample_source.h"

struct archive;
struct archive_entry;

namespace oclip {

struct WebDatasetOptions {
  // Image member extensions, in order of preference, lower-case. OpenCLIP
  // training accepts png/jpg/jpeg/webp.
  std::vector<std::string> image_extensions = {"jpg", "jpeg", "png", "webp", "bmp", "gif"};
  std::string caption_extension = "txt";
  std::string metadata_extension = "json";
  // Which groups are samples. OpenCLIP's training filter wants both an image
  // and a caption; embedding images needs only the image.
  bool require_image = true;
  bool require_caption = false;
  // Guards memory against a corrupt size field or an absurd member.
  int64_t max_member_bytes = int64_t{256} << 20;
  // Size of each read from the byte source.
  size_t read_block_bytes = size_t{1} << 20;
};

// One shard.
class WebDatasetShardReader {
 public:
  // Opens the shard's byte stream (see ByteSource::Open for its errors);
  // archive errors surface from Next(). INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<WebDatasetShardReader>> Open(
      const std::string& shard, const WebDatasetOptions& options = {});

  ~WebDatasetShardReader();
  WebDatasetShardReader(const WebDatasetShardReader&) = delete;
  WebDatasetShardReader& operator=(const WebDatasetShardReader&) = delete;

  // Fills `*sample` and returns true; false at the shard's end. When the
  // shard fails, returns its error once (DATA_LOSS for truncated / corrupt
  // archives, the byte source's error otherwise; its kind is counted in
  // stats() and set as stats().status), then false.
  absl::StatusOr<bool> Next(Sample* sample);

  const ShardStats& stats() const { return stats_; }

 private:
  struct Group;
  friend struct WebDatasetCallbacks;

  WebDatasetShardReader(std::string shard, WebDatasetOptions options);

  absl::Status Fail(FailureKind kind, absl::Status status);
  // Error of the last libarchive call, classified.
  absl::Status ArchiveError(absl::string_view what);
  // Reads the current member's data into `*out` (OK), or skips it.
  absl::Status ReadMember(std::string* out, int64_t size, bool* oversized);
  absl::Status SkipMember();
  // Adds the current member to `group_`, or starts a new group and moves the
  // previous (complete) one into `*finished`.
  absl::Status AddMember(archive_entry* entry, std::unique_ptr<Group>* finished);
  // libarchive's read callback: the next block of the byte source.
  absl::StatusOr<size_t> ReadBlock(const void** block);
  // Moves `group` into `*sample` if it is a sample (counting it), else counts
  // why not (unless the shard failed: then the failure is the reason).
  // Returns whether `*sample` was filled.
  bool Deliver(std::unique_ptr<Group> group, Sample* sample, bool count_incomplete = true);
  // After the shard failed with `error`: delivers the group being read if it
  // is a sample (the error follows on the next call), else returns `error`.
  absl::StatusOr<bool> FailureResult(absl::Status error, Sample* sample);
  // After the archive's end: reads the byte source to its end, so that a
  // `pipe:` command's exit status is known.
  absl::Status Drain();
  void CloseSource();

  const std::string shard_;
  const WebDatasetOptions options_;
  std::unique_ptr<ByteSource> source_;
  absl::Status source_status_;  // First error the byte source returned.
  std::vector<char> buffer_;
  archive* archive_ = nullptr;
  bool opened_ = false;
  bool done_ = false;
  absl::Status pending_error_;  // Returned after the sample completed before it.
  std::unique_ptr<Group> group_;
  int64_t next_ordinal_ = 0;
  ShardStats stats_;
};

// Many shards, one after the other. A failed shard (missing, unreadable,
// corrupt, truncated, failing command) is logged as a warning, counted, and
// the source goes on with the next one: Next() never returns an error, and a
// caller checks stats() (per shard: stats().shards[i].status) at the end.
class WebDatasetSource : public SampleSource {
 public:
  struct Options {
    // Shard specs (paths or `pipe:` commands), already brace-expanded (see
    // data/shard_list.h).
    std::vector<std::string> shards;
    WebDatasetOptions reader;
  };

  // INVALID_ARGUMENT for bad reader options. An empty shard list is valid.
  static absl::StatusOr<std::unique_ptr<WebDatasetSource>> Create(Options options);

  absl::StatusOr<bool> Next(Sample* sample) override;
  const SourceStats& stats() const override { return stats_; }

 private:
  explicit WebDatasetSource(Options options) : options_(std::move(options)) {}
  // Adds the current reader's counts not yet in the totals.
  void SyncTotals();
  void FinishShard();

  const Options options_;
  size_t next_shard_ = 0;
  std::unique_ptr<WebDatasetShardReader> reader_;
  ShardStats synced_;  // The part of reader_->stats() already in stats_.
  SourceStats stats_;
};

// INVALID_ARGUMENT when `options` cannot work (no image extension, a
// non-positive size limit, ...).
absl::Status ValidateWebDatasetOptions(const WebDatasetOptions& options);

// webdataset's base_plus_ext: splits a member path into key and extension
// (not lower-cased). False when the path has none (see above).
bool SplitWebDatasetKey(absl::string_view path, std::string* key, std::string* extension);

}  // namespace oclip

#endif  // OCLIP_DATA_WEBDATASET_H_
