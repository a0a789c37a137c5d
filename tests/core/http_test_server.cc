#include "tests/core/http_test_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace oclip::testing {
namespace {

constexpr size_t kMaxRequestHead = 64 * 1024;

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 302:
      return "Found";
    case 404:
      return "Not Found";
    case 416:
      return "Range Not Satisfiable";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

// Sends everything unless the peer goes away; SIGPIPE is suppressed.
bool SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Parses "bytes=START-" or "bytes=START-END" (the forms download clients use).
bool ParseRange(absl::string_view value, int64_t size, int64_t* start, int64_t* end) {
  if (!absl::ConsumePrefix(&value, "bytes=")) return false;
  size_t dash = value.find('-');
  if (dash == absl::string_view::npos || !absl::SimpleAtoi(value.substr(0, dash), start)) {
    return false;
  }
  absl::string_view last = value.substr(dash + 1);
  *end = size - 1;
  if (!last.empty() && !absl::SimpleAtoi(last, end)) return false;
  *end = std::min(*end, size - 1);
  return true;
}

}  // namespace

std::string RecordedRequest::Header(const std::string& name) const {
  auto it = headers.find(absl::AsciiStrToLower(name));
  return it == headers.end() ? "" : it->second;
}

absl::StatusOr<std::unique_ptr<HttpTestServer>> HttpTestServer::Start() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int pipe_fds[2];
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      ::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    std::string error = std::strerror(errno);
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot listen on 127.0.0.1: ", error));
  }
  std::unique_ptr<HttpTestServer> server(
      new HttpTestServer(fd, ntohs(addr.sin_port), pipe_fds[0], pipe_fds[1]));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

HttpTestServer::HttpTestServer(int listen_fd, int port, int wake_read, int wake_write)
    : listen_fd_(listen_fd), port_(port), wake_read_(wake_read), wake_write_(wake_write) {}

HttpTestServer::~HttpTestServer() {
  Stop();
  ::close(listen_fd_);
  ::close(wake_read_);
  ::close(wake_write_);
}

void HttpTestServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  char byte = 0;
  while (::write(wake_write_, &byte, 1) < 0 && errno == EINTR) {
  }
  if (thread_.joinable()) thread_.join();
  // Refuse later connections instead of leaving them in the backlog.
  ::shutdown(listen_fd_, SHUT_RDWR);
}

void HttpTestServer::SetRoute(const std::string& path, HttpRoute route) {
  std::lock_guard<std::mutex> lock(mu_);
  routes_[path] = std::move(route);
}

std::string HttpTestServer::Url(const std::string& path) const {
  return absl::StrCat("http://127.0.0.1:", port_, path);
}

std::vector<RecordedRequest> HttpTestServer::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

std::vector<RecordedRequest> HttpTestServer::RequestsFor(const std::string& path) const {
  std::vector<RecordedRequest> matching;
  for (RecordedRequest& request : requests()) {
    if (request.path == path) matching.push_back(std::move(request));
  }
  return matching;
}

bool HttpTestServer::WaitReadable(int fd) const {
  pollfd fds[2] = {{fd, POLLIN, 0}, {wake_read_, POLLIN, 0}};
  for (;;) {
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (fds[1].revents & POLLIN)) return false;
    if (fds[0].revents != 0) return true;
  }
}

void HttpTestServer::Serve() {
  while (WaitReadable(listen_fd_)) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    HandleConnection(fd);
    ::close(fd);
  }
}

bool HttpTestServer::ReadRequest(int fd, RecordedRequest* request) const {
  std::string head;
  char buffer[4096];
  while (head.find("\r\n\r\n") == std::string::npos) {
    if (head.size() > kMaxRequestHead || !WaitReadable(fd)) return false;
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    head.append(buffer, static_cast<size_t>(n));
  }
  head.resize(head.find("\r\n\r\n"));
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  std::vector<absl::string_view> first = absl::StrSplit(lines[0], ' ');
  if (first.size() < 2) return false;
  request->method = std::string(first[0]);
  request->path = std::string(first[1].substr(0, first[1].find('?')));
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) continue;
    request->headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  return true;
}

HttpRoute HttpTestServer::TakeRoute(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = routes_.find(path);
  if (it == routes_.end()) {
    HttpRoute missing;
    missing.status = 404;
    return missing;
  }
  HttpRoute route = it->second;
  if (it->second.drop_times > 0) {
    --it->second.drop_times;
  } else {
    route.drop_after_bytes = -1;
  }
  return route;
}

void HttpTestServer::HandleConnection(int fd) {
  RecordedRequest request;
  if (!ReadRequest(fd, &request)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(request);
  }
  Respond(fd, request, TakeRoute(request.path));
}

void HttpTestServer::Respond(int fd, const RecordedRequest& request, const HttpRoute& route) const {
  std::string extra_headers;
  std::string body;
  int status = route.status;
  if (!route.redirect_to.empty()) {
    status = 302;
    extra_headers = absl::StrCat("Location: ", route.redirect_to, "\r\n");
  } else if (status != 200) {
    body = absl::StrCat(status, " ", ReasonPhrase(status), "\n");
  } else {
    body = route.body;
    const int64_t size = static_cast<int64_t>(route.body.size());
    int64_t start = 0;
    int64_t end = 0;
    std::string range = request.Header("range");
    if (!range.empty() && !route.ignore_range && ParseRange(range, size, &start, &end)) {
      if (start >= size) {
        status = 416;
        body.clear();
        extra_headers = absl::StrCat("Content-Range: bytes */", size, "\r\n");
      } else {
        status = 206;
        body = route.body.substr(static_cast<size_t>(start), static_cast<size_t>(end - start + 1));
        extra_headers = absl::StrCat("Content-Range: bytes ", start, "-", end, "/", size, "\r\n");
      }
    }
    extra_headers += "Accept-Ranges: bytes\r\n";
  }
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\n",
                                  "Content-Length: ", body.size(), "\r\n", extra_headers,
                                  "Connection: close\r\n\r\n");
  if (!SendAll(fd, head) || request.method == "HEAD") return;
  const bool stall = route.stall_after_bytes >= 0;
  const int64_t limit = stall ? route.stall_after_bytes : route.drop_after_bytes;
  size_t send_bytes = body.size();
  if (limit >= 0) send_bytes = std::min(send_bytes, static_cast<size_t>(limit));
  if (!SendAll(fd, absl::string_view(body).substr(0, send_bytes))) return;
  if (stall) {
    // Hold the connection open until the client gives up (EOF) or we stop.
    char buffer[256];
    while (WaitReadable(fd) && ::recv(fd, buffer, sizeof(buffer), 0) > 0) {
    }
  }
}

}  // namespace oclip::testing
