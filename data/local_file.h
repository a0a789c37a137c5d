// Small file helpers shared by the CSV and image-folder sources (internal to
// data/): reading an image or caption file whole, mapping file errors to
// FailureKinds, path joining, and a cap on per-item warnings so that a
// million missing files do not flood the log.
//
// Thread safety: the functions are thread-safe; a WarningLimiter is used by
// one thread (it belongs to one source).

#ifndef OCLIP_DATA_LOCAL_FILE_H_
#define OCLIP_DATA_LOCAL_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "data/sample_source.h"

namespace oclip {

// Replaces `*contents` with the file's bytes. NOT_FOUND when it does not
// exist, INVALID_ARGUMENT for a directory, PERMISSION_DENIED, DATA_LOSS for
// an I/O error.
absl::Status ReadLocalFile(const std::string& path, std::string* contents);

// missing_file for NOT_FOUND, unreadable_file otherwise.
FailureKind FailureKindForFileError(const absl::Status& status);

// `relative` resolved against `dir` ("" = as is); absolute paths unchanged.
std::string JoinPath(absl::string_view dir, absl::string_view relative);

// The directory part of `path` ("" when it has none).
std::string DirName(absl::string_view path);

// Lower-case extension after the last '.' of the basename, "" when none.
std::string LowerExtension(absl::string_view path);

// Logs the first `limit` warnings, then one line saying the rest are counted
// but not logged.
class WarningLimiter {
 public:
  explicit WarningLimiter(int limit = 10) : limit_(limit) {}
  void Warn(absl::string_view message);

 private:
  int limit_;
  int count_ = 0;
};

}  // namespace oclip

#endif  // OCLIP_DATA_LOCAL_FILE_H_
