#include "data/sample_source.h"

#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace oclip {
namespace {

constexpr absl::string_view kFailureKindNames[kNumFailureKinds] = {
    "missing_file",   "unreadable_file",   "corrupt_archive",  "truncated",
    "command_failed", "incomplete_sample", "duplicate_member", "oversized_member",
    "malformed_row",  "unreadable_image",
};

std::string CountsToString(int64_t samples, const std::array<int64_t, kNumFailureKinds>& failures) {
  std::string out = absl::StrCat("samples=", samples);
  for (int i = 0; i < kNumFailureKinds; ++i) {
    if (failures[i] != 0) absl::StrAppend(&out, " ", kFailureKindNames[i], "=", failures[i]);
  }
  return out;
}

}  // namespace

void Sample::Clear() {
  key.clear();
  image.clear();
  image_extension.clear();
  image_path.clear();
  caption.clear();
  has_caption = false;
  metadata_json.clear();
  shard.clear();
  index_in_shard = 0;
}

absl::string_view FailureKindName(FailureKind kind) {
  const int i = static_cast<int>(kind);
  return i >= 0 && i < kNumFailureKinds ? kFailureKindNames[i] : "unknown";
}

int64_t ShardStats::total_failures() const {
  return std::accumulate(failures.begin(), failures.end(), int64_t{0});
}

std::string ShardStats::ToString() const { return CountsToString(samples, failures); }

int64_t SourceStats::total_failures() const {
  return std::accumulate(failures.begin(), failures.end(), int64_t{0});
}

std::string SourceStats::ToString() const { return CountsToString(samples, failures); }

absl::Status ForEachSample(SampleSource& source, const std::function<absl::Status(Sample&)>& fn) {
  Sample sample;
  while (true) {
    absl::StatusOr<bool> more = source.Next(&sample);
    if (!more.ok()) return more.status();
    if (!*more) return absl::OkStatus();
    absl::Status status = fn(sample);
    if (!status.ok()) return status;
  }
}

}  // namespace oclip
