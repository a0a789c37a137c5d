// A small HTTP/1.1 server on 127.0.0.1 for download tests (test-only).
//
// Start() binds port 0 on the loopback interface and serves from one thread
// that the server owns and joins in Stop() / the destructor. Each connection
// carries one request ("Connection: close"). Routes are set per path and can
// simulate what downloads meet in the wild: Range requests (206 / 416),
// servers that ignore Range, redirects, HTTP errors, connections dropped after
// N body bytes, and stalled transfers. Every request is recorded so that tests
// can assert what the client sent (e.g. its Range header) or that it sent
// nothing at all. No sleeps: a stalled connection waits on poll() until the
// client hangs up or the server stops.
//
// Thread safety: all public methods may be called from any thread while the
// server runs.

#ifndef OCLIP_TESTS_CORE_HTTP_TEST_SERVER_H_
#define OCLIP_TESTS_CORE_HTTP_TEST_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace oclip::testing {

struct HttpRoute {
  // Body of a 200 answer (and the source of 206 ranges).
  std::string body;
  // A status other than 200 answers with that status and a short text body.
  int status = 200;
  // Non-empty: answer 302 with this Location (absolute or a path).
  std::string redirect_to;
  // Answer Range requests with 200 and the whole body.
  bool ignore_range = false;
  // Close the connection after sending this many body bytes (the headers
  // promise the full length), for the next `drop_times` requests of the path.
  int64_t drop_after_bytes = -1;
  int drop_times = 0;
  // >= 0: send this many body bytes, then nothing more until the client hangs
  // up or the server stops.
  int64_t stall_after_bytes = -1;
};

struct RecordedRequest {
  std::string method;
  std::string path;                            // without the query string
  std::map<std::string, std::string> headers;  // names lower-cased

  // The value of a header (name in any case), "" when absent.
  std::string Header(const std::string& name) const;
};

class HttpTestServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpTestServer>> Start();

  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;
  ~HttpTestServer();

  // Stops accepting and joins the serving thread; later connections are
  // refused. Idempotent.
  void Stop();

  void SetRoute(const std::string& path, HttpRoute route);
  // "http://127.0.0.1:PORT" + path.
  std::string Url(const std::string& path) const;
  int port() const { return port_; }

  std::vector<RecordedRequest> requests() const;
  // Requests for `path` so far.
  std::vector<RecordedRequest> RequestsFor(const std::string& path) const;

 private:
  HttpTestServer(int listen_fd, int port, int wake_read, int wake_write);

  void Serve();
  void HandleConnection(int fd);
  // Waits until `fd` is readable; false if the server is stopping.
  bool WaitReadable(int fd) const;
  // Reads the request head; false on EOF, error or stop.
  bool ReadRequest(int fd, RecordedRequest* request) const;
  // The route for a request (applying and counting its drops) or a 404.
  HttpRoute TakeRoute(const std::string& path);
  void Respond(int fd, const RecordedRequest& request, const HttpRoute& route) const;

  const int listen_fd_;
  const int port_;
  const int wake_read_;  // readable once Stop() was called
  const int wake_write_;
  std::thread thread_;
  bool stopped_ = false;  // only touched by Stop() (callers serialize it)

  mutable std::mutex mu_;
  std::map<std::string, HttpRoute> routes_;  // guarded by mu_
  std::vector<RecordedRequest> requests_;    // guarded by mu_
};

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_CORE_HTTP_TEST_SERVER_H_
