#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/logging.h"

namespace oclip {
namespace {

constexpr char kExpositionContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kTextContentType[] = "text/plain; charset=utf-8";
constexpr char kMetricsPath[] = "/metrics";
// Request line plus headers, "\r\n\r\n" included. A scrape needs a few
// hundred bytes; the cap keeps one connection's memory small.
constexpr size_t kMaxRequestHeaderBytes = 16 * 1024;
constexpr int kListenBacklog = 16;
// After accept() fails for lack of file descriptors or memory the listening
// socket stays readable; waiting this long (or for the stop signal) before
// the next try keeps the thread from spinning.
constexpr int kAcceptRetryMs = 100;

std::string ErrnoText(int error) { return std::generic_category().message(error); }

// Closes the descriptor on every way out of ServeConnection, exceptions
// included.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { close(fd_); }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
};

enum class WaitResult { kReady, kTimedOut, kStopping, kError };

// Waits until `fd` has one of `events`, `wake_fd` is readable (the server is
// stopping, which wins) or `deadline` passes.
WaitResult WaitFor(int fd, short events, int wake_fd, absl::Time deadline) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return WaitResult::kTimedOut;
    // Rounded up so that the deadline has passed when poll() times out.
    const int64_t left_ms = absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)));
    const int timeout_ms = left_ms > INT_MAX ? INT_MAX : static_cast<int>(left_ms);
    pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
    const int ready = poll(fds, 2, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return WaitResult::kError;
    }
    if (fds[1].revents != 0) return WaitResult::kStopping;
    // POLLERR / POLLHUP count as ready: the next recv() or send() reports them.
    if (fds[0].revents != 0) return WaitResult::kReady;
  }
}

// Writes all of `data` to the non-blocking socket `fd`; false when the peer
// is gone, the deadline passed or the server is stopping.
bool SendAll(int fd, absl::string_view data, int wake_fd, absl::Time deadline) {
  while (!data.empty()) {
    // MSG_NOSIGNAL: a peer that hung up gives EPIPE, not a process-wide SIGPIPE.
    const ssize_t sent = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent >= 0) {
      data.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
    if (WaitFor(fd, POLLOUT, wake_fd, deadline) != WaitResult::kReady) return false;
  }
  return true;
}

// Reads and discards what the client still sends until it closes, so that
// closing our end does not reset the connection (and with it the response
// the client has not read yet) while request bytes are unread.
void DrainUntilClosed(int fd, int wake_fd, absl::Time deadline) {
  char buffer[4096];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n > 0) continue;
    if (n == 0) return;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return;
    if (WaitFor(fd, POLLIN, wake_fd, deadline) != WaitResult::kReady) return;
  }
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    default:
      return "Internal Server Error";
  }
}

struct Response {
  int status = 500;
  const char* content_type = kTextContentType;
  std::string body;
  // "Allow" header; null: none.
  const char* allow = nullptr;
};

// The whole response, Content-Length being that of `body` also when the body
// is left out (HEAD).
std::string Serialize(const Response& response, bool include_body) {
  std::string out = absl::StrCat("HTTP/1.1 ", response.status, " ", ReasonPhrase(response.status),
                                 "\r\nContent-Type: ", response.content_type,
                                 "\r\nContent-Length: ", response.body.size(),
                                 "\r\nCache-Control: no-store\r\nConnection: close\r\n");
  if (response.allow != nullptr) absl::StrAppend(&out, "Allow: ", response.allow, "\r\n");
  out += "\r\n";
  if (include_body) out += response.body;
  return out;
}

// Whether the headers (the lines after the request line) announce a body.
bool HasBody(absl::string_view headers) {
  for (absl::string_view line : absl::StrSplit(headers, "\r\n", absl::SkipEmpty())) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    const absl::string_view name = absl::StripAsciiWhitespace(line.substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (absl::EqualsIgnoreCase(name, "transfer-encoding")) return true;
    uint64_t length = 0;
    if (absl::EqualsIgnoreCase(name, "content-length") &&
        (!absl::SimpleAtoi(value, &length) || length > 0)) {
      return true;
    }
  }
  return false;
}

}  // namespace

MetricsHttpServer::MetricsHttpServer(const MetricsRegistry* registry, absl::Duration read_timeout)
    : registry_(registry), read_timeout_(read_timeout) {}

MetricsHttpServer::~MetricsHttpServer() {
  if (thread_.joinable()) {
    // The thread polls wake_fd_ wherever it waits, so it returns at once.
    const uint64_t one = 1;
    while (write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const MetricsHttpServerOptions& options, const MetricsRegistry* registry) {
  if (registry == nullptr) {
    return absl::InvalidArgumentError("metrics HTTP server: the registry is null");
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics HTTP server: port ", options.port,
                                                   " is outside [0, 65535] (0: any free port)"));
  }
  sockaddr_in address;
  std::memset(&address, 0, sizeof(address));
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(options.port));
  if (inet_pton(AF_INET, options.host.c_str(), &address.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics HTTP server: host \"", options.host,
                     "\" is not an IPv4 address (e.g. 0.0.0.0 or 127.0.0.1)"));
  }
  if (options.read_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics HTTP server: read_timeout is ",
                     absl::FormatDuration(options.read_timeout), ", expected > 0"));
  }

  // From here on the server owns every descriptor it opened, so each error
  // return closes them.
  std::unique_ptr<MetricsHttpServer> server(
      new MetricsHttpServer(registry, options.read_timeout));
  const std::string address_and_port = absl::StrCat(options.host, ":", options.port);
  auto unavailable = [&address_and_port](const char* call) {
    return absl::UnavailableError(absl::StrCat("metrics HTTP server cannot listen on ",
                                               address_and_port, ": ", call, ": ",
                                               ErrnoText(errno)));
  };
  // Non-blocking: a connection that is reset between poll() and accept()
  // must not block the thread in accept().
  server->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (server->listen_fd_ < 0) return unavailable("socket");
  // A restarted server can bind while connections of the previous one are
  // in TIME_WAIT. It does not allow two listeners on one port.
  const int on = 1;
  if (setsockopt(server->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0) {
    return unavailable("setsockopt(SO_REUSEADDR)");
  }
  if (bind(server->listen_fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) !=
      0) {
    return unavailable("bind");
  }
  if (listen(server->listen_fd_, kListenBacklog) != 0) return unavailable("listen");
  sockaddr_in bound;
  socklen_t bound_size = sizeof(bound);
  if (getsockname(server->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_size) != 0) {
    return unavailable("getsockname");
  }
  server->port_ = ntohs(bound.sin_port);
  server->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (server->wake_fd_ < 0) return unavailable("eventfd");

  try {
    server->thread_ = std::thread(&MetricsHttpServer::Run, server.get());
  } catch (const std::system_error& e) {
    return absl::UnavailableError(absl::StrCat("metrics HTTP server on ", address_and_port,
                                               ": cannot start its thread: ", e.what()));
  }
  return server;
}

void MetricsHttpServer::Run() {
  bool accept_failing = false;
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LogError(absl::StrCat("metrics HTTP server on port ", port_,
                            " stops serving: poll: ", ErrnoText(errno)));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;

    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      // The client went away, or another wake-up raced us: nothing to do.
      if (error == EINTR || error == EAGAIN || error == EWOULDBLOCK || error == ECONNABORTED) {
        continue;
      }
      if (!accept_failing) {
        LogWarning(
            absl::StrCat("metrics HTTP server on port ", port_, ": accept: ", ErrnoText(error)));
        accept_failing = true;
      }
      pollfd wake = {wake_fd_, POLLIN, 0};
      if (poll(&wake, 1, kAcceptRetryMs) > 0) return;
      continue;
    }
    accept_failing = false;
    // Nothing may escape the thread (std::terminate); a request that failed
    // this way just loses its connection.
    try {
      ServeConnection(fd);
    } catch (const std::exception& e) {
      LogError(absl::StrCat("metrics HTTP server: cannot answer a request: ", e.what()));
    } catch (...) {
      LogError("metrics HTTP server: cannot answer a request: unknown exception");
    }
  }
}

void MetricsHttpServer::ServeConnection(int raw_fd) {
  const ScopedFd fd(raw_fd);
  const absl::Time read_deadline = absl::Now() + read_timeout_;

  std::string request;
  size_t header_end = std::string::npos;
  char buffer[4096];
  while (header_end == std::string::npos && request.size() <= kMaxRequestHeaderBytes) {
    const ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      // "\r\n\r\n" may straddle the previous read.
      const size_t search_from = request.size() < 3 ? 0 : request.size() - 3;
      request.append(buffer, static_cast<size_t>(n));
      header_end = request.find("\r\n\r\n", search_from);
      continue;
    }
    if (n == 0) return;  // the client gave up before finishing its request
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return;
    // Timed out (a stalled or silent client) or stopping: drop it unanswered.
    if (WaitFor(fd.get(), POLLIN, wake_fd_, read_deadline) != WaitResult::kReady) return;
  }

  Response response;
  bool include_body = true;
  // Whether the client may still be sending request bytes we will not read.
  bool unread_input = true;
  if (header_end == std::string::npos || header_end + 4 > kMaxRequestHeaderBytes) {
    response.status = 431;
    response.body = "Request header fields too large\n";
  } else {
    const absl::string_view head = absl::string_view(request).substr(0, header_end);
    const size_t line_end = head.find("\r\n");
    const absl::string_view request_line = head.substr(0, line_end);
    // "GET /metrics?x=1 HTTP/1.1"
    const std::vector<absl::string_view> parts = absl::StrSplit(request_line, ' ');
    if (parts.size() != 3 || parts[0].empty() || parts[1].empty() ||
        !absl::StartsWith(parts[2], "HTTP/1.")) {
      response.status = 400;
      response.body = "Bad request\n";
    } else {
      unread_input = line_end != absl::string_view::npos && HasBody(head.substr(line_end));
      const absl::string_view method = parts[0];
      const absl::string_view path = parts[1].substr(0, parts[1].find('?'));
      include_body = method != "HEAD";
      if (path != kMetricsPath) {
        response.status = 404;
        response.body = "Not found: the metrics are at /metrics\n";
      } else if (method != "GET") {
        response.status = 405;
        response.body = "Method not allowed: use GET\n";
        response.allow = "GET";
      } else {
        try {
          response.body = registry_->Exposition();
          response.status = 200;
          response.content_type = kExpositionContentType;
        } catch (const std::exception& e) {
          LogError(absl::StrCat("metrics HTTP server: cannot render the metrics: ", e.what()));
          response.status = 500;
          response.body = "Internal server error\n";
        } catch (...) {
          LogError("metrics HTTP server: cannot render the metrics: unknown exception");
          response.status = 500;
          response.body = "Internal server error\n";
        }
      }
    }
  }

  const absl::Time write_deadline = absl::Now() + read_timeout_;
  if (!SendAll(fd.get(), Serialize(response, include_body), wake_fd_, write_deadline)) return;
  if (unread_input) {
    shutdown(fd.get(), SHUT_WR);
    DrainUntilClosed(fd.get(), wake_fd_, write_deadline);
  }
}

}  // namespace oclip
