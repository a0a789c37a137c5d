#include "data/webdataset.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"

namespace oclip {

// The sample being assembled from consecutive members with one key.
struct WebDatasetShardReader::Group {
  std::string key;
  int64_t ordinal = 0;
  std::string image;
  std::string image_extension;
  size_t image_rank = 0;  // Index in image_extensions; lower is preferred.
  bool has_image = false;
  std::string caption;
  bool has_caption = false;
  std::string metadata_json;
  std::vector<std::string> extensions;  // Seen so far, for duplicates.
  bool dropped = false;                 // Already counted as a failure.
};

// libarchive calls back into the reader for bytes; the reader's ByteSource
// does the actual I/O.
struct WebDatasetCallbacks {
  static la_ssize_t Read(archive* a, void* client_data, const void** buffer) {
    absl::StatusOr<size_t> n = static_cast<WebDatasetShardReader*>(client_data)->ReadBlock(buffer);
    if (!n.ok()) {
      archive_set_error(a, EIO, "%s", std::string(n.status().message()).c_str());
      return -1;
    }
    return static_cast<la_ssize_t>(*n);
  }
};

bool SplitWebDatasetKey(absl::string_view path, std::string* key, std::string* extension) {
  const size_t slash = path.rfind('/');
  const size_t base = slash == absl::string_view::npos ? 0 : slash + 1;
  const size_t dot = path.find('.', base);
  // base_plus_ext's regex needs at least one non-dot character before the dot.
  if (dot == absl::string_view::npos || dot == base) return false;
  *key = std::string(path.substr(0, dot));
  *extension = std::string(path.substr(dot + 1));
  return true;
}

absl::Status ValidateWebDatasetOptions(const WebDatasetOptions& options) {
  if (options.image_extensions.empty() && options.require_image) {
    return absl::InvalidArgumentError("webdataset: require_image with no image_extensions");
  }
  if (options.max_member_bytes <= 0) {
    return absl::InvalidArgumentError("webdataset: max_member_bytes must be positive");
  }
  if (options.read_block_bytes == 0) {
    return absl::InvalidArgumentError("webdataset: read_block_bytes must be positive");
  }
  return absl::OkStatus();
}

WebDatasetShardReader::WebDatasetShardReader(std::string shard, WebDatasetOptions options)
    : shard_(std::move(shard)), options_(std::move(options)) {
  stats_.shard = shard_;
}

WebDatasetShardReader::~WebDatasetShardReader() { CloseSource(); }

absl::StatusOr<std::unique_ptr<WebDatasetShardReader>> WebDatasetShardReader::Open(
    const std::string& shard, const WebDatasetOptions& options) {
  OCLIP_RETURN_IF_ERROR(ValidateWebDatasetOptions(options));
  std::unique_ptr<WebDatasetShardReader> reader(new WebDatasetShardReader(shard, options));
  OCLIP_ASSIGN_OR_RETURN(reader->source_, ByteSource::Open(shard));
  reader->buffer_.resize(options.read_block_bytes);
  return reader;
}

absl::StatusOr<size_t> WebDatasetShardReader::ReadBlock(const void** block) {
  absl::StatusOr<size_t> n = source_->Read(buffer_.data(), buffer_.size());
  if (!n.ok() && source_status_.ok()) source_status_ = n.status();
  *block = buffer_.data();
  return n;
}

void WebDatasetShardReader::CloseSource() {
  if (archive_ != nullptr) {
    archive_read_free(archive_);
    archive_ = nullptr;
  }
  // Kills and reaps a `pipe:` command that is still running.
  if (source_ != nullptr) source_->Close().IgnoreError();
}

absl::Status WebDatasetShardReader::Fail(FailureKind kind, absl::Status status) {
  stats_.AddFailure(kind);
  stats_.status = status;
  done_ = true;
  CloseSource();
  return status;
}

absl::Status WebDatasetShardReader::ArchiveError(absl::string_view what) {
  if (!source_status_.ok()) {
    const FailureKind kind = absl::IsUnavailable(source_status_) ? FailureKind::kCommandFailed
                                                                 : FailureKind::kUnreadableFile;
    return Fail(kind, source_status_);
  }
  const char* message = archive_error_string(archive_);
  const std::string detail = message != nullptr ? message : "unknown libarchive error";
  // The stream ran out while libarchive, having recognised a tar, still
  // wanted bytes: truncated. Anything else (not a tar at all, a header with
  // a bad checksum) is corruption.
  if (source_->at_end() && archive_format(archive_) != 0) {
    return Fail(FailureKind::kTruncated,
                absl::DataLossError(absl::StrCat("shard ", shard_, " is truncated (", what, ": ",
                                                 detail, ") after ", stats_.samples, " samples")));
  }
  return Fail(
      FailureKind::kCorruptArchive,
      absl::DataLossError(absl::StrCat("shard ", shard_, " is not a readable tar (", what, ": ",
                                       detail, ") after ", stats_.samples, " samples")));
}

absl::Status WebDatasetShardReader::ReadMember(std::string* out, int64_t size, bool* oversized) {
  *oversized = size > options_.max_member_bytes;
  if (*oversized) return SkipMember();
  out->clear();
  if (size >= 0) out->reserve(static_cast<size_t>(size));
  while (true) {
    const void* block;
    size_t length;
    la_int64_t offset;
    const int r = archive_read_data_block(archive_, &block, &length, &offset);
    if (r == ARCHIVE_EOF) return absl::OkStatus();
    if (r < ARCHIVE_WARN) {
      out->clear();  // A member cut short is no part of any sample.
      return ArchiveError("reading a member");
    }
    // Sparse members report holes through the offset.
    if (offset > static_cast<la_int64_t>(out->size())) out->resize(static_cast<size_t>(offset));
    if (static_cast<int64_t>(out->size() + length) > options_.max_member_bytes) {
      *oversized = true;
      out->clear();
      return SkipMember();
    }
    out->append(static_cast<const char*>(block), length);
  }
}

absl::Status WebDatasetShardReader::SkipMember() {
  if (archive_read_data_skip(archive_) < ARCHIVE_WARN) return ArchiveError("skipping a member");
  return absl::OkStatus();
}

bool WebDatasetShardReader::Deliver(std::unique_ptr<Group> group, Sample* sample,
                                    bool count_incomplete) {
  if (group == nullptr || group->dropped) return false;
  if ((options_.require_image && !group->has_image) ||
      (options_.require_caption && !group->has_caption)) {
    if (count_incomplete) stats_.AddFailure(FailureKind::kIncompleteSample);
    return false;
  }
  sample->Clear();
  sample->key = std::move(group->key);
  sample->image = std::move(group->image);
  sample->image_extension = std::move(group->image_extension);
  sample->caption = std::move(group->caption);
  sample->has_caption = group->has_caption;
  sample->metadata_json = std::move(group->metadata_json);
  sample->shard = shard_;
  sample->index_in_shard = group->ordinal;
  ++stats_.samples;
  return true;
}

absl::Status WebDatasetShardReader::AddMember(archive_entry* entry,
                                              std::unique_ptr<Group>* finished) {
  const char* pathname = archive_entry_pathname(entry);
  if (archive_entry_filetype(entry) != AE_IFREG || pathname == nullptr) return SkipMember();
  const absl::string_view path = pathname;
  // webdataset's tar_file_iterator skips top-level "__meta__" members.
  if (path.find('/') == absl::string_view::npos && absl::StartsWith(path, "__") &&
      absl::EndsWith(path, "__")) {
    return SkipMember();
  }
  std::string key, extension;
  if (!SplitWebDatasetKey(path, &key, &extension)) return SkipMember();
  absl::AsciiStrToLower(&extension);

  if (group_ == nullptr || group_->key != key) {
    // A new key: the previous group is complete.
    *finished = std::move(group_);
    group_ = std::make_unique<Group>();
    group_->key = std::move(key);
    group_->ordinal = next_ordinal_++;
  }
  Group& group = *group_;
  if (std::find(group.extensions.begin(), group.extensions.end(), extension) !=
      group.extensions.end()) {
    stats_.AddFailure(FailureKind::kDuplicateMember);
    return SkipMember();
  }
  group.extensions.push_back(extension);

  const int64_t size = archive_entry_size_is_set(entry) ? archive_entry_size(entry) : -1;
  std::string* target = nullptr;
  const auto image_it =
      std::find(options_.image_extensions.begin(), options_.image_extensions.end(), extension);
  const size_t image_rank = static_cast<size_t>(image_it - options_.image_extensions.begin());
  if (image_it != options_.image_extensions.end() &&
      (!group.has_image || image_rank < group.image_rank)) {
    target = &group.image;
  } else if (extension == options_.caption_extension) {
    target = &group.caption;
  } else if (extension == options_.metadata_extension) {
    target = &group.metadata_json;
  }
  if (target == nullptr || group.dropped) return SkipMember();

  bool oversized = false;
  OCLIP_RETURN_IF_ERROR(ReadMember(target, size, &oversized));
  if (oversized) {
    stats_.AddFailure(FailureKind::kOversizedMember);
    group.dropped = true;
    return absl::OkStatus();
  }
  if (target == &group.image) {
    group.has_image = true;
    group.image_rank = image_rank;
    group.image_extension = extension;
  } else if (target == &group.caption) {
    group.has_caption = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> WebDatasetShardReader::FailureResult(absl::Status error, Sample* sample) {
  if (Deliver(std::move(group_), sample, /*count_incomplete=*/false)) {
    pending_error_ = std::move(error);
    return true;
  }
  return error;
}

absl::Status WebDatasetShardReader::Drain() {
  while (!source_->at_end()) {
    absl::StatusOr<size_t> n = source_->Read(buffer_.data(), buffer_.size());
    if (!n.ok()) {
      source_status_ = n.status();
      return ArchiveError("after the end of the archive");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> WebDatasetShardReader::Next(Sample* sample) {
  if (!pending_error_.ok()) {
    absl::Status error = std::exchange(pending_error_, absl::OkStatus());
    return FailureResult(std::move(error), sample);
  }
  if (done_) return false;
  if (!opened_) {
    opened_ = true;
    archive_ = archive_read_new();
    if (archive_ == nullptr)
      return Fail(FailureKind::kUnreadableFile, absl::InternalError("archive_read_new failed"));
    archive_read_support_format_tar(archive_);
    archive_read_support_filter_gzip(archive_);
    archive_read_support_filter_bzip2(archive_);
    archive_read_support_filter_xz(archive_);
    archive_read_support_filter_zstd(archive_);
    if (archive_read_open(archive_, this, nullptr, WebDatasetCallbacks::Read, nullptr) !=
        ARCHIVE_OK) {
      return ArchiveError("opening");
    }
  }
  while (true) {
    archive_entry* entry = nullptr;
    const int r = archive_read_next_header(archive_, &entry);
    if (r == ARCHIVE_EOF) {
      // A `pipe:` command that failed after a complete-looking tar still
      // fails the shard (what was read in full is delivered).
      absl::Status drained = Drain();
      if (!drained.ok()) return FailureResult(std::move(drained), sample);
      done_ = true;
      const bool delivered = Deliver(std::move(group_), sample);
      CloseSource();
      return delivered;
    }
    if (r < ARCHIVE_WARN) return FailureResult(ArchiveError("reading a header"), sample);
    std::unique_ptr<Group> finished;
    absl::Status status = AddMember(entry, &finished);
    if (finished != nullptr) {
      // Even when reading the new member failed, the group before it is
      // whole: deliver it, and the error on the next call.
      if (Deliver(std::move(finished), sample)) {
        pending_error_ = std::move(status);
        return true;
      }
    }
    if (!status.ok()) return FailureResult(std::move(status), sample);
  }
}

// ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<WebDatasetSource>> WebDatasetSource::Create(Options options) {
  OCLIP_RETURN_IF_ERROR(ValidateWebDatasetOptions(options.reader));
  return std::unique_ptr<WebDatasetSource>(new WebDatasetSource(std::move(options)));
}

void WebDatasetSource::SyncTotals() {
  const ShardStats& current = reader_->stats();
  stats_.samples += current.samples - synced_.samples;
  for (int i = 0; i < kNumFailureKinds; ++i) {
    stats_.failures[i] += current.failures[i] - synced_.failures[i];
  }
  synced_.samples = current.samples;
  synced_.failures = current.failures;
}

void WebDatasetSource::FinishShard() {
  SyncTotals();
  const ShardStats& shard = reader_->stats();
  if (!shard.status.ok()) {
    LogWarning(absl::StrCat("webdataset: skipping the rest of shard ", shard.shard, ": ",
                            shard.status.ToString(), " (", shard.ToString(), ")"));
  }
  stats_.AddShard(shard);
  reader_.reset();
  synced_ = ShardStats();
}

absl::StatusOr<bool> WebDatasetSource::Next(Sample* sample) {
  while (true) {
    if (reader_ == nullptr) {
      if (next_shard_ == options_.shards.size()) return false;
      const std::string& shard = options_.shards[next_shard_++];
      absl::StatusOr<std::unique_ptr<WebDatasetShardReader>> reader =
          WebDatasetShardReader::Open(shard, options_.reader);
      if (!reader.ok()) {
        ShardStats failed;
        failed.shard = shard;
        failed.status = reader.status();
        const FailureKind kind = absl::IsNotFound(reader.status()) ? FailureKind::kMissingFile
                                 : absl::StartsWith(shard, kPipePrefix)
                                     ? FailureKind::kCommandFailed
                                     : FailureKind::kUnreadableFile;
        failed.AddFailure(kind);
        stats_.AddFailure(kind);
        LogWarning(
            absl::StrCat("webdataset: skipping shard ", shard, ": ", reader.status().ToString()));
        stats_.AddShard(std::move(failed));
        continue;
      }
      reader_ = *std::move(reader);
    }
    absl::StatusOr<bool> more = reader_->Next(sample);
    if (more.ok() && *more) {
      SyncTotals();
      return true;
    }
    // The shard is over, well or not (its error is in its stats): go on.
    FinishShard();
  }
}

}  // namespace oclip
