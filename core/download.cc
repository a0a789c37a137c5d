#include "core/download.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "core/logging.h"
#include "core/status.h"

namespace oclip {
namespace {

// ---------------------------------------------------------------------------
// SHA-256 constants (FIPS 180-4, section 4.2.2 and 5.3.3).

constexpr std::array<uint32_t, 64> kRoundConstants = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

constexpr std::array<uint32_t, 8> kInitialState = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

inline uint32_t RotateRight(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

bool IsHex(absl::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

// ---------------------------------------------------------------------------
// Files.

absl::Status ErrnoError(absl::string_view what, const std::string& path, int err) {
  return ErrnoToStatus(err, absl::StrCat(what, " ", path));
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::Status CreateParentDirectories(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return absl::OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) return ErrnoError("cannot create folder", parent.string(), ec.value());
  return absl::OkStatus();
}

// The `.part` file, opened read-write and held under an exclusive advisory
// lock for the lifetime of the object.
class PartFile {
 public:
  static absl::StatusOr<std::unique_ptr<PartFile>> OpenLocked(const std::string& path) {
    // A competing process may rename the file between our open() and flock();
    // re-check that the path still names the locked inode.
    for (int tries = 0; tries < 3; ++tries) {
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return ErrnoError("cannot open", path, errno);
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        ::close(fd);
        if (err == EWOULDBLOCK) {
          return absl::UnavailableError(
              absl::StrCat("another process is downloading ", path, "; try again later"));
        }
        return ErrnoError("cannot lock", path, err);
      }
      struct stat by_fd, by_path;
      if (::fstat(fd, &by_fd) == 0 && ::stat(path.c_str(), &by_path) == 0 &&
          by_fd.st_ino == by_path.st_ino && by_fd.st_dev == by_path.st_dev) {
        return std::unique_ptr<PartFile>(new PartFile(path, fd));
      }
      ::close(fd);
    }
    return absl::UnavailableError(absl::StrCat(path, " keeps being replaced by another process"));
  }

  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  ~PartFile() { ::close(fd_); }

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  absl::StatusOr<int64_t> Size() const {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return ErrnoError("cannot stat", path_, errno);
    return static_cast<int64_t>(st.st_size);
  }

  absl::Status Truncate() {
    if (::ftruncate(fd_, 0) != 0) return ErrnoError("cannot truncate", path_, errno);
    return absl::OkStatus();
  }

  absl::Status WriteAt(const char* data, size_t size, int64_t offset) {
    while (size > 0) {
      ssize_t n = ::pwrite(fd_, data, size, offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("cannot write", path_, errno);
      }
      data += n;
      size -= static_cast<size_t>(n);
      offset += n;
    }
    return absl::OkStatus();
  }

  // Flushes and renames the file to `destination`; the lock is held until the
  // object is destroyed, so no other process starts on the old name meanwhile.
  absl::Status CommitTo(const std::string& destination) {
    if (::fsync(fd_) != 0) return ErrnoError("cannot flush", path_, errno);
    if (::rename(path_.c_str(), destination.c_str()) != 0) {
      return ErrnoError(absl::StrCat("cannot rename ", path_, " to"), destination, errno);
    }
    return absl::OkStatus();
  }

  void Remove() { ::unlink(path_.c_str()); }

 private:
  PartFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_;
};

// ---------------------------------------------------------------------------
// Progress bar on stderr (only when stderr is a terminal).

std::string HumanBytes(int64_t bytes) {
  double value = static_cast<double>(bytes);
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, units[unit]);
}

class ProgressBar {
 public:
  ProgressBar(std::string label, bool requested)
      : label_(std::move(label)),
        enabled_(requested && ::isatty(STDERR_FILENO) == 1),
        start_(std::chrono::steady_clock::now()) {}

  ~ProgressBar() {
    if (drawn_) std::fputc('\n', stderr);
  }

  void Update(const DownloadProgress& progress, int64_t resumed_bytes) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    drawn_ = true;
    double seconds = std::chrono::duration<double>(now - start_).count();
    double rate =
        seconds > 0 ? static_cast<double>(progress.downloaded_bytes - resumed_bytes) / seconds : 0;
    std::string line;
    if (progress.total_bytes > 0) {
      line =
          absl::StrFormat("\r%s  %s / %s  %3d%%  %s/s  ", label_,
                          HumanBytes(progress.downloaded_bytes), HumanBytes(progress.total_bytes),
                          static_cast<int>(100 * progress.downloaded_bytes / progress.total_bytes),
                          HumanBytes(static_cast<int64_t>(rate)));
    } else {
      line = absl::StrFormat("\r%s  %s  %s/s  ", label_, HumanBytes(progress.downloaded_bytes),
                             HumanBytes(static_cast<int64_t>(rate)));
    }
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
  }

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// ---------------------------------------------------------------------------
// libcurl.

absl::Status EnsureCurlInitialized() {
  // curl_global_init is not thread-safe; a function-local static runs it once.
  static const CURLcode code = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (code != CURLE_OK) {
    return absl::InternalError(absl::StrCat("curl_global_init: ", curl_easy_strerror(code)));
  }
  return absl::OkStatus();
}

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlHandle = std::unique_ptr<CURL, CurlDeleter>;
using CurlHeaders = std::unique_ptr<curl_slist, SlistDeleter>;

// State of one HTTP attempt, shared with the libcurl callbacks.
struct Transfer {
  const DownloadRequest* request = nullptr;
  CURL* curl = nullptr;
  PartFile* part = nullptr;
  ProgressBar* bar = nullptr;
  int64_t offset = 0;   // bytes already in the part file, where writing starts
  int64_t written = 0;  // bytes written by this attempt
  // "Content-Range: bytes START-END/TOTAL" of the current response, -1 if absent.
  int64_t content_range_start = -1;
  int64_t content_range_total = -1;
  bool body_started = false;
  bool cancelled = false;
  int64_t last_reported = -1;
  absl::Status write_status;  // why the write callback stopped the transfer
};

// Parses "Content-Range: bytes START-END/TOTAL" (case-insensitive name).
void ParseHeaderLine(absl::string_view line, Transfer* t) {
  if (absl::StartsWith(line, "HTTP/")) {  // a new response (e.g. after a redirect)
    t->content_range_start = -1;
    t->content_range_total = -1;
    return;
  }
  constexpr absl::string_view kName = "content-range:";
  if (line.size() < kName.size() || !absl::EqualsIgnoreCase(line.substr(0, kName.size()), kName)) {
    return;
  }
  absl::string_view value = absl::StripAsciiWhitespace(line.substr(kName.size()));
  if (!absl::ConsumePrefix(&value, "bytes ")) return;
  size_t dash = value.find('-');
  int64_t number;
  if (dash != absl::string_view::npos && absl::SimpleAtoi(value.substr(0, dash), &number)) {
    t->content_range_start = number;
  }
  size_t slash = value.find('/');
  if (slash != absl::string_view::npos && absl::SimpleAtoi(value.substr(slash + 1), &number)) {
    t->content_range_total = number;
  }
}

size_t HeaderCallback(char* data, size_t size, size_t count, void* user) {
  ParseHeaderLine(absl::string_view(data, size * count), static_cast<Transfer*>(user));
  return size * count;
}

// Runs before the first body byte is written: decides where it goes.
absl::Status StartBody(Transfer* t) {
  long code = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
  if (code == 206) {
    if (t->content_range_start != t->offset) {
      return absl::FailedPreconditionError(absl::StrCat("server answered a request for bytes ",
                                                        t->offset, "- with a range starting at ",
                                                        t->content_range_start));
    }
    return absl::OkStatus();
  }
  if (t->offset > 0) {
    // The server ignored the Range header and sends the whole file.
    LogInfo(absl::StrCat("server does not resume ", t->request->url, "; starting over"));
    t->offset = 0;
    return t->part->Truncate();
  }
  return absl::OkStatus();
}

size_t WriteCallback(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t bytes = size * count;
  if (!t->body_started) {
    t->body_started = true;
    t->write_status = StartBody(t);
    if (!t->write_status.ok()) return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
  }
  t->write_status = t->part->WriteAt(data, bytes, t->offset + t->written);
  if (!t->write_status.ok()) return 0;
  t->written += static_cast<int64_t>(bytes);
  return bytes;
}

int ProgressCallback(void* user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->body_started) return 0;  // still on headers / redirects
  DownloadProgress progress;
  progress.downloaded_bytes = t->offset + static_cast<int64_t>(dlnow);
  progress.total_bytes = dltotal > 0 ? t->offset + static_cast<int64_t>(dltotal) : -1;
  if (progress.downloaded_bytes == t->last_reported) return 0;
  t->last_reported = progress.downloaded_bytes;
  t->bar->Update(progress, t->offset);
  if (t->request->progress && !t->request->progress(progress)) {
    t->cancelled = true;
    return 1;
  }
  return 0;
}

// What one attempt ended with.
struct AttemptResult {
  absl::Status status;
  bool retryable = false;
  bool part_complete = false;  // 416 for a resume: the part holds the whole file
  bool restart = false;        // 416 for a resume: the part is longer than the file
};

AttemptResult HttpError(long code, const std::string& url) {
  std::string message = absl::StrCat("HTTP ", code, " for ", url);
  AttemptResult result;
  if (code == 404 || code == 410) {
    result.status = absl::NotFoundError(message);
  } else if (code == 401 || code == 403) {
    result.status = absl::PermissionDeniedError(
        absl::StrCat(message, " (private or gated: an access token may be needed)"));
  } else if (code == 429 || code >= 500) {
    result.status = absl::UnavailableError(message);
    result.retryable = true;
  } else {
    result.status = absl::FailedPreconditionError(message);
  }
  return result;
}

AttemptResult CurlError(CURLcode code, const char* detail, const Transfer& t) {
  const std::string& url = t.request->url;
  std::string message =
      absl::StrCat(curl_easy_strerror(code), (detail[0] ? ": " : ""), detail, " (", url, ")");
  AttemptResult result;
  switch (code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      result.status = absl::InvalidArgumentError(message);
      break;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      result.status = absl::UnavailableError(absl::StrCat(message, "; offline or unknown host?"));
      break;
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
      result.status = absl::UnavailableError(message);
      break;
    case CURLE_OPERATION_TIMEDOUT:
      result.status = absl::DeadlineExceededError(message);
      result.retryable = true;
      break;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      result.status = absl::UnavailableError(absl::StrCat(
          message, "; interrupted after ", t.offset + t.written, " bytes, kept for resuming"));
      result.retryable = true;
      break;
    case CURLE_ABORTED_BY_CALLBACK:
      result.status = absl::CancelledError(absl::StrCat("download of ", url, " cancelled"));
      break;
    case CURLE_TOO_MANY_REDIRECTS:
      result.status = absl::FailedPreconditionError(message);
      break;
    default:
      result.status = absl::UnavailableError(message);
      break;
  }
  return result;
}

absl::Status SetOptions(CURL* curl, Transfer* t, curl_slist* headers, char* error_buffer) {
  const DownloadRequest& r = *t->request;
  std::string range = absl::StrCat(t->offset, "-");
  bool ok = true;
  auto set = [&ok](CURLcode code) { ok = ok && code == CURLE_OK; };
  set(curl_easy_setopt(curl, CURLOPT_URL, r.url.c_str()));
  set(curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer));
  set(curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L));  // signals and threads do not mix
#if LIBCURL_VERSION_NUM >= 0x075500                   // 7.85 replaced the bit masks with strings
  set(curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
#else
  set(curl_easy_setopt(curl, CURLOPT_PROTOCOLS, long{CURLPROTO_HTTP | CURLPROTO_HTTPS}));
  set(curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS, long{CURLPROTO_HTTP | CURLPROTO_HTTPS}));
#endif
  set(curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L));
  set(curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L));
  set(curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L));
  set(curl_easy_setopt(curl, CURLOPT_USERAGENT, "oclip/1 libcurl"));
  set(curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers));
  set(curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout_ms)));
  set(curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(r.total_timeout_ms)));
  if (r.stall_timeout_ms > 0) {
    set(curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L));
    set(curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                         static_cast<long>((r.stall_timeout_ms + 999) / 1000)));
  }
  if (t->offset > 0) set(curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str()));  // copied
  set(curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &HeaderCallback));
  set(curl_easy_setopt(curl, CURLOPT_HEADERDATA, t));
  set(curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &WriteCallback));
  set(curl_easy_setopt(curl, CURLOPT_WRITEDATA, t));
  set(curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &ProgressCallback));
  set(curl_easy_setopt(curl, CURLOPT_XFERINFODATA, t));
  set(curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L));
  if (!ok) return absl::InternalError("cannot configure libcurl");
  return absl::OkStatus();
}

// One HTTP request, appending to the part file from its current size.
AttemptResult RunAttempt(const DownloadRequest& request, PartFile* part, ProgressBar* bar) {
  AttemptResult result;
  absl::StatusOr<int64_t> size = part->Size();
  if (!size.ok()) {
    result.status = size.status();
    return result;
  }
  CurlHandle curl(curl_easy_init());
  if (curl == nullptr) {
    result.status = absl::InternalError("curl_easy_init failed");
    return result;
  }
  curl_slist* raw_headers = nullptr;
  for (const std::string& header : request.headers) {
    raw_headers = curl_slist_append(raw_headers, header.c_str());
  }
  CurlHeaders headers(raw_headers);

  Transfer t;
  t.request = &request;
  t.curl = curl.get();
  t.part = part;
  t.bar = bar;
  t.offset = request.resume ? *size : 0;
  if (t.offset == 0 && *size > 0) {
    result.status = part->Truncate();
    if (!result.status.ok()) return result;
  }
  char error_buffer[CURL_ERROR_SIZE] = {0};
  result.status = SetOptions(curl.get(), &t, headers.get(), error_buffer);
  if (!result.status.ok()) return result;

  CURLcode code = curl_easy_perform(curl.get());
  if (code == CURLE_OK) return result;
  if (code == CURLE_WRITE_ERROR && !t.write_status.ok()) {
    result.status = t.write_status;
    return result;
  }
  if (code == CURLE_HTTP_RETURNED_ERROR) {
    long http_code = 0;
    curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &http_code);
    result = HttpError(http_code, request.url);
    if (http_code == 416 && t.offset > 0) {
      result.part_complete = t.content_range_total == t.offset;
      result.restart = !result.part_complete;
    }
    return result;
  }
  return CurlError(code, error_buffer, t);
}

// Transfers into `part` until complete, retrying transient failures.
absl::Status DownloadIntoPart(const DownloadRequest& request, PartFile* part) {
  ProgressBar bar(std::filesystem::path(request.destination).filename().string(),
                  request.progress_bar);
  const int attempts = std::max(1, request.max_attempts);
  int attempt = 1;
  bool restarted = false;
  for (;;) {
    AttemptResult result = RunAttempt(request, part, &bar);
    // The checksum decides whether a complete-looking part is right.
    if (result.status.ok() || result.part_complete) return absl::OkStatus();
    if (result.restart && !restarted) {  // not a failure of the server: no retry used up
      LogInfo(absl::StrCat(part->path(), " is longer than ", request.url, "; starting over"));
      restarted = true;
      OCLIP_RETURN_IF_ERROR(part->Truncate());
      continue;
    }
    if (!result.retryable || attempt >= attempts) return result.status;
    LogWarning(
        absl::StrCat(result.status.message(), "; retrying (", attempt, "/", attempts - 1, ")"));
    if (request.retry_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(request.retry_delay_ms * attempt));
    }
    ++attempt;
  }
}

absl::Status VerifyPart(const DownloadRequest& request, const PartFile& part) {
  if (request.sha256.empty()) return absl::OkStatus();
  OCLIP_ASSIGN_OR_RETURN(std::string actual, Sha256FileHex(part.path()));
  if (Sha256Matches(request.sha256, actual)) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("SHA-256 of ", request.url, " is ", actual, ", expected ",
                                          request.sha256, "; the corrupt download was removed"));
}

absl::Status ValidateRequest(const DownloadRequest& request) {
  if (request.url.empty()) return absl::InvalidArgumentError("download URL is empty");
  if (request.destination.empty()) {
    return absl::InvalidArgumentError("download destination is empty");
  }
  const std::string& sha = request.sha256;
  if (!sha.empty() && (sha.size() < 8 || sha.size() > 64 || !IsHex(sha))) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected SHA-256 '", sha, "' is not 8 to 64 hex digits (", request.url, ")"));
  }
  return absl::OkStatus();
}

// Whether an existing destination can be used as it is.
absl::StatusOr<bool> UsableCachedFile(const DownloadRequest& request) {
  if (request.force || !FileExists(request.destination)) return false;
  if (request.sha256.empty()) return true;
  OCLIP_ASSIGN_OR_RETURN(std::string actual, Sha256FileHex(request.destination));
  if (Sha256Matches(request.sha256, actual)) return true;
  LogWarning(absl::StrCat(request.destination, " has SHA-256 ", actual, ", expected ",
                          request.sha256, "; downloading it again"));
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------
// Sha256.

Sha256::Sha256() : state_(kInitialState), buffer_{} {}

void Sha256::ProcessBlock(const uint8_t* block) {
  std::array<uint32_t, 64> w;
  for (int i = 0; i < 16; ++i) {
    w[i] = (uint32_t{block[4 * i]} << 24) | (uint32_t{block[4 * i + 1]} << 16) |
           (uint32_t{block[4 * i + 2]} << 8) | uint32_t{block[4 * i + 3]};
  }
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = RotateRight(w[i - 15], 7) ^ RotateRight(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = RotateRight(w[i - 2], 17) ^ RotateRight(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
  uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t s1 = RotateRight(e, 6) ^ RotateRight(e, 11) ^ RotateRight(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = h + s1 + ch + kRoundConstants[i] + w[i];
    uint32_t s0 = RotateRight(a, 2) ^ RotateRight(a, 13) ^ RotateRight(a, 22);
    uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = s0 + maj;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  state_[0] += a;
  state_[1] += b;
  state_[2] += c;
  state_[3] += d;
  state_[4] += e;
  state_[5] += f;
  state_[6] += g;
  state_[7] += h;
}

void Sha256::Update(const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  total_bytes_ += size;
  if (buffer_size_ > 0) {
    size_t take = std::min(size, buffer_.size() - buffer_size_);
    std::memcpy(buffer_.data() + buffer_size_, bytes, take);
    buffer_size_ += take;
    bytes += take;
    size -= take;
    if (buffer_size_ < buffer_.size()) return;
    ProcessBlock(buffer_.data());
    buffer_size_ = 0;
  }
  for (; size >= 64; bytes += 64, size -= 64) ProcessBlock(bytes);
  std::memcpy(buffer_.data(), bytes, size);
  buffer_size_ = size;
}

Sha256::Digest Sha256::Finish() {
  uint64_t bit_length = total_bytes_ * 8;
  uint8_t padding[72] = {0x80};
  // Pad to 56 mod 64, then append the length as a 64-bit big-endian number.
  size_t pad = (buffer_size_ < 56 ? 56 : 120) - buffer_size_;
  for (int i = 0; i < 8; ++i) {
    padding[pad + i] = static_cast<uint8_t>(bit_length >> (56 - 8 * i));
  }
  Update(padding, pad + 8);
  Digest digest;
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 4; ++j) {
      digest[4 * i + j] = static_cast<uint8_t>(state_[i] >> (24 - 8 * j));
    }
  }
  return digest;
}

std::string ToHex(const Sha256::Digest& digest) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * digest.size());
  for (uint8_t byte : digest) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 15]);
  }
  return hex;
}

std::string Sha256Hex(absl::string_view data) {
  Sha256 sha;
  sha.Update(data);
  return ToHex(sha.Finish());
}

absl::StatusOr<std::string> Sha256FileHex(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  Sha256 sha;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return ErrnoError("cannot read", path, err);
    }
    if (n == 0) break;
    sha.Update(buffer.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return ToHex(sha.Finish());
}

bool Sha256Matches(absl::string_view expected, absl::string_view actual_hex) {
  if (expected.size() < 8 || expected.size() > actual_hex.size()) return false;
  return absl::EqualsIgnoreCase(expected, actual_hex.substr(0, expected.size()));
}

// ---------------------------------------------------------------------------
// DownloadFile.

std::string PartialDownloadPath(const std::string& destination) { return destination + ".part"; }

absl::Status DownloadFile(const DownloadRequest& request) {
  OCLIP_RETURN_IF_ERROR(ValidateRequest(request));
  OCLIP_ASSIGN_OR_RETURN(bool cached, UsableCachedFile(request));
  if (cached) return absl::OkStatus();
  OCLIP_RETURN_IF_ERROR(EnsureCurlInitialized());
  OCLIP_RETURN_IF_ERROR(CreateParentDirectories(request.destination));
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<PartFile> part,
                         PartFile::OpenLocked(PartialDownloadPath(request.destination)));
  OCLIP_ASSIGN_OR_RETURN(int64_t resumed_bytes, part->Size());
  if (!request.resume) resumed_bytes = 0;

  absl::Status status = DownloadIntoPart(request, part.get());
  if (status.ok()) status = VerifyPart(request, *part);
  if (absl::IsDataLoss(status) && resumed_bytes > 0) {
    // The stale part may belong to another version of the file: start over once.
    LogWarning(absl::StrCat(status.message(), "; downloading from the start"));
    status = part->Truncate();
    if (status.ok()) status = DownloadIntoPart(request, part.get());
    if (status.ok()) status = VerifyPart(request, *part);
  }
  if (status.ok()) return part->CommitTo(request.destination);

  absl::StatusOr<int64_t> kept = part->Size();
  if (absl::IsDataLoss(status) || !kept.ok() || *kept == 0) part->Remove();
  return status;
}

namespace {

struct FetchBuffer {
  std::string body;
  int64_t max_bytes = 0;
  bool too_large = false;
};

size_t AppendToBuffer(char* data, size_t size, size_t count, void* user) {
  auto* buffer = static_cast<FetchBuffer*>(user);
  if (static_cast<int64_t>(buffer->body.size() + size * count) > buffer->max_bytes) {
    buffer->too_large = true;
    return 0;  // Makes libcurl stop with CURLE_WRITE_ERROR.
  }
  buffer->body.append(data, size * count);
  return size * count;
}

}  // namespace

absl::StatusOr<std::string> FetchUrl(const std::string& url, int timeout_ms, int64_t max_bytes) {
  if (url.empty()) return absl::InvalidArgumentError("empty url");
  OCLIP_RETURN_IF_ERROR(EnsureCurlInitialized());
  CurlHandle curl(curl_easy_init());
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  FetchBuffer buffer;
  buffer.max_bytes = max_bytes;
  char error_buffer[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, AppendToBuffer);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &buffer);
  const CURLcode code = curl_easy_perform(curl.get());
  if (buffer.too_large) {
    return absl::ResourceExhaustedError(
        absl::StrCat(url, ": the answer is larger than ", max_bytes, " bytes"));
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    return absl::DeadlineExceededError(absl::StrCat(url, ": timed out"));
  }
  if (code != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(
        url, ": ", error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code)));
  }
  long http_status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &http_status);
  if (http_status == 404 || http_status == 410) {
    return absl::NotFoundError(absl::StrCat(url, ": HTTP ", http_status));
  }
  if (http_status == 401 || http_status == 403) {
    return absl::PermissionDeniedError(absl::StrCat(url, ": HTTP ", http_status));
  }
  if (http_status < 200 || http_status >= 300) {
    return absl::UnavailableError(absl::StrCat(url, ": HTTP ", http_status));
  }
  return std::move(buffer.body);
}

}  // namespace oclip
