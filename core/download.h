// Downloading checkpoints over HTTP(S) into a local file, and SHA-256.
//
// DownloadFile() fetches `url` with libcurl into `<destination>.part`, resumes
// a partial `.part` left by an earlier attempt with an HTTP Range request,
// verifies the SHA-256 of the complete file and only then renames it to
// `destination` (atomically: a file under the destination name is always
// complete and, when a checksum was given, verified). A destination that
// already exists and matches the checksum is not downloaded again.
//
// Errors (absl::Status codes):
//   INVALID_ARGUMENT     empty/malformed url or destination, bad sha256 spec
//   NOT_FOUND            HTTP 404 / 410
//   PERMISSION_DENIED    HTTP 401 / 403 (gated or private repositories)
//   UNAVAILABLE          offline, DNS failure, connection refused/reset, HTTP 5xx
//                        or 429, connection dropped mid-transfer (the `.part`
//                        file is kept: calling again resumes), another process
//                        downloading the same file
//   DEADLINE_EXCEEDED    connect, stall or total timeout
//   DATA_LOSS            the downloaded bytes do not match the checksum (the
//                        corrupt file is removed, nothing is left under the
//                        destination name)
//   CANCELLED            the progress callback returned false
//   RESOURCE_EXHAUSTED   disk full
//   FAILED_PRECONDITION  other HTTP 4xx, unusable server replies
//   INTERNAL             file system or libcurl set-up failures
//
// Thread safety: DownloadFile() may run concurrently from many threads on
// different destinations; two processes downloading the same destination are
// serialized by an advisory lock on the `.part` file (the second one fails
// with UNAVAILABLE instead of corrupting it). Callbacks run on the calling
// thread. Sha256 is a plain value type (not synchronized).

#ifndef OCLIP_CORE_DOWNLOAD_H_
#define OCLIP_CORE_DOWNLOAD_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oclip {

// Incremental SHA-256 (FIPS 180-4).
class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256();
  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Returns the digest; the object must not be updated afterwards.
  Digest Finish();

 private:
  void ProcessBlock(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffer_size_ = 0;
  uint64_t total_bytes_ = 0;
};

// Lower-case hex of a digest.
std::string ToHex(const Sha256::Digest& digest);
// SHA-256 of `data` as 64 lower-case hex digits.
std::string Sha256Hex(absl::string_view data);
// SHA-256 of a file's contents as 64 lower-case hex digits. NOT_FOUND /
// INTERNAL when the file cannot be read.
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

// Whether `actual_hex` (64 hex digits) matches `expected`: the full hex digest
// or a prefix of it (at least 8 hex digits), case-insensitive.
bool Sha256Matches(absl::string_view expected, absl::string_view actual_hex);

struct DownloadProgress {
  int64_t downloaded_bytes = 0;  // including bytes of a resumed `.part`
  int64_t total_bytes = -1;      // -1 while unknown
};

struct DownloadRequest {
  // http(s):// URL. Redirects are followed.
  std::string url;
  // Final local path; parent folders are created.
  std::string destination;
  // Expected SHA-256 of the complete file: 64 hex digits, or a prefix of at
  // least 8 hex digits (as in OpenCLIP's GitHub release file names). Empty: no
  // verification, and an existing destination is accepted as it is.
  std::string sha256;
  // Extra request headers, e.g. "Authorization: Bearer <token>".
  std::vector<std::string> headers;
  // Called on the calling thread as bytes arrive; return false to cancel.
  std::function<bool(const DownloadProgress&)> progress;
  // Draw a progress bar on stderr, only when stderr is a terminal.
  bool progress_bar = true;
  // Download again even if the destination exists and verifies.
  bool force = false;
  // Resume an existing `<destination>.part` with a Range request.
  bool resume = true;
  // Attempts for transient failures (dropped connection, 5xx, timeouts); each
  // retry resumes where the last one stopped.
  int max_attempts = 3;
  // Pause before retry k (k = 1, 2, ...): k * retry_delay_ms.
  int retry_delay_ms = 1000;
  // Fail a connection attempt after this long.
  int connect_timeout_ms = 30000;
  // Fail when no byte arrives for this long (0: never; libcurl counts whole
  // seconds, so this is rounded up to one).
  int stall_timeout_ms = 60000;
  // Fail a single attempt after this long in total (0: never).
  int total_timeout_ms = 0;
};

// Downloads `request.url` to `request.destination` as described above.
absl::Status DownloadFile(const DownloadRequest& request);

// The temporary file DownloadFile() writes before the rename.
std::string PartialDownloadPath(const std::string& destination);

// GETs a small document (a metrics page, a JSON answer) into memory: the
// body of a 2xx answer, or the error codes above. At most `max_bytes`
// (RESOURCE_EXHAUSTED beyond), within `timeout_ms` in total.
absl::StatusOr<std::string> FetchUrl(const std::string& url, int timeout_ms = 10000,
                                     int64_t max_bytes = 64 << 20);

}  // namespace oclip

#endif  // OCLIP_CORE_DOWNLOAD_H_
