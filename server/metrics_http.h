// The Prometheus scrape endpoint of `oclip serve`: a minimal HTTP/1.1 server
// that answers GET /metrics with a MetricsRegistry's exposition. It is our
// own rather than civetweb because Debian's civetweb creates its threads with
// a fixed small stack, which glibc rejects (EINVAL) in a process whose static
// TLS (LibTorch, gRPC) is larger, and it takes up to 2 s to stop.
//
// Responses (each with Content-Length and "Connection: close"; the connection
// is closed after one response):
//   GET /metrics        200, Content-Type "text/plain; version=0.0.4;
//                       charset=utf-8", body registry->Exposition() rendered
//                       for this request; a query string is ignored
//   other methods on /metrics  405 with "Allow: GET" (HEAD: without a body)
//   any other path      404
//   malformed request line  400
//   request line + headers over 16 KiB  431
//   rendering failed    500 (e.g. out of memory; nothing escapes the server
//                       thread)
// It serves no files. A client that sends no complete request within
// options.read_timeout is disconnected without an answer.
//
// Errors from Start() (absl::Status codes):
//   INVALID_ARGUMENT  null registry, port outside [0, 65535], host not an
//                     IPv4 address literal, read_timeout <= 0
//   UNAVAILABLE       cannot listen on host:port (port in use, address not
//                     local, ...): the message names host:port and the reason
// Nothing exits or aborts the process.
//
// Ownership and threads: the server owns one thread, which accepts and serves
// connections one at a time (scrapes are rare and cheap, so serial handling
// is enough). A slow or stalled client holds it for at most read_timeout to
// send its request and read_timeout to take the response, after which later
// scrapes are answered. The destructor wakes the thread at once (also in the
// middle of a connection), joins it and closes the listening socket; after it
// returns no request is served and the port is free. The registry is borrowed
// and must outlive the server. port() may be called from any thread;
// Exposition() runs on the server thread concurrently with metric updates
// (MetricsRegistry is thread-safe). Writes use MSG_NOSIGNAL: the process's
// SIGPIPE disposition is left alone.

#ifndef OCLIP_SERVER_METRICS_HTTP_H_
#define OCLIP_SERVER_METRICS_HTTP_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/metrics.h"

namespace oclip {

struct MetricsHttpServerOptions {
  // IPv4 address to listen on. "0.0.0.0": every interface.
  std::string host = "0.0.0.0";
  // 0: pick a free port (read it back with port()).
  int port = 9090;
  // How long a connection may take to deliver its request line and headers,
  // and separately to accept the response, before it is dropped. Bounds how
  // long one client can delay the next scrape.
  absl::Duration read_timeout = absl::Seconds(5);
};

class MetricsHttpServer {
 public:
  // Serves GET /metrics from `registry` (borrowed; must outlive the server)
  // on options.host:options.port; errors as described above.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const MetricsHttpServerOptions& options, const MetricsRegistry* registry);

  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;
  // Wakes and joins the server thread, then closes the sockets.
  ~MetricsHttpServer();

  // The bound port (the chosen one when options.port was 0).
  int port() const { return port_; }

 private:
  MetricsHttpServer(const MetricsRegistry* registry, absl::Duration read_timeout);

  // The server thread: accepts until the wake-up fd is signalled.
  void Run();
  // Reads one request from `fd`, answers it and closes `fd`.
  void ServeConnection(int fd);

  const MetricsRegistry* const registry_;
  const absl::Duration read_timeout_;
  int listen_fd_ = -1;
  // An eventfd: readable once the destructor asks the thread to stop.
  int wake_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace oclip

#endif  // OCLIP_SERVER_METRICS_HTTP_H_
