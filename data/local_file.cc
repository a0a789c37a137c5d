#include "data/local_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/logging.h"

namespace oclip {

absl::Status ReadLocalFile(const std::string& path, std::string* contents) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int error = errno;
    const std::string message = absl::StrCat("cannot open ", path, ": ", std::strerror(error));
    if (error == ENOENT || error == ENOTDIR) return absl::NotFoundError(message);
    if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
    return absl::DataLossError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  contents->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (true) {
    // Read past the stat'ed size too: the file may have grown.
    if (got == contents->size()) contents->resize(got + 4096);
    const ssize_t n = ::read(fd, &(*contents)[got], contents->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      contents->clear();
      return absl::DataLossError(absl::StrCat("cannot read ", path, ": ", std::strerror(error)));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  contents->resize(got);
  return absl::OkStatus();
}

FailureKind FailureKindForFileError(const absl::Status& status) {
  return absl::IsNotFound(status) ? FailureKind::kMissingFile : FailureKind::kUnreadableFile;
}

std::string JoinPath(absl::string_view dir, absl::string_view relative) {
  if (dir.empty() || (!relative.empty() && relative[0] == '/')) return std::string(relative);
  if (dir.back() == '/') return absl::StrCat(dir, relative);
  return absl::StrCat(dir, "/", relative);
}

std::string DirName(absl::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return "";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

std::string LowerExtension(absl::string_view path) {
  const size_t slash = path.rfind('/');
  const size_t base = slash == absl::string_view::npos ? 0 : slash + 1;
  const size_t dot = path.rfind('.');
  if (dot == absl::string_view::npos || dot < base) return "";
  return absl::AsciiStrToLower(path.substr(dot + 1));
}

void WarningLimiter::Warn(absl::string_view message) {
  if (count_ + 1 < limit_) {
    LogWarning(std::string_view(message.data(), message.size()));
  } else if (count_ + 1 == limit_) {
    LogWarning(absl::StrCat(message, " (further warnings of this source are only counted)"));
  }
  ++count_;
}

}  // namespace oclip
