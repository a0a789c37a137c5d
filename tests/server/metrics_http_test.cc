// Tests of server/metrics_http.h over real loopback sockets.
#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/metrics.h"

namespace oclip {
namespace {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;

  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// A closing file descriptor.
class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

absl::Status ConnectToLoopback(const Socket& socket, int port) {
  sockaddr_in address;
  std::memset(&address, 0, sizeof(address));
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(socket.fd(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// A connected socket whose reads and writes fail after 10 s instead of
// hanging the test when the server never answers.
absl::StatusOr<std::unique_ptr<Socket>> Connect(int port) {
  auto socket = std::make_unique<Socket>(::socket(AF_INET, SOCK_STREAM, 0));
  if (socket->fd() < 0) return absl::InternalError("socket() failed");
  timeval timeout{10, 0};
  setsockopt(socket->fd(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(socket->fd(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  absl::Status connected = ConnectToLoopback(*socket, port);
  if (!connected.ok()) return connected;
  return socket;
}

// Sends `request` as is and reads the response to the end (the server closes
// every connection); `method` only tells how to check the body length.
absl::StatusOr<HttpResponse> FetchRaw(int port, const std::string& method,
                                      const std::string& request) {
  absl::StatusOr<std::unique_ptr<Socket>> socket = Connect(port);
  if (!socket.ok()) return socket.status();
  const int fd = (*socket)->fd();
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buffer[4096];
  while (true) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    raw.append(buffer, static_cast<size_t>(n));
  }

  const size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos) {
    return absl::DataLossError(absl::StrCat("no end of headers in: ", raw));
  }
  HttpResponse response;
  response.body = raw.substr(header_end + 4);
  std::vector<std::string> lines =
      absl::StrSplit(absl::string_view(raw).substr(0, header_end), "\r\n");
  // "HTTP/1.1 200 OK"
  std::vector<absl::string_view> status_line = absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  if (status_line.size() < 2 || !absl::StartsWith(status_line[0], "HTTP/1.") ||
      !absl::SimpleAtoi(status_line[1], &response.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", lines[0]));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) return absl::DataLossError("bad header: " + lines[i]);
    response.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(absl::string_view(lines[i]).substr(colon + 1)));
  }
  const std::string length = response.Header("content-length");
  size_t expected_length = 0;
  // A HEAD response's Content-Length is that of the body it leaves out.
  if (!length.empty() && method != "HEAD" &&
      (!absl::SimpleAtoi(length, &expected_length) || expected_length != response.body.size())) {
    return absl::DataLossError(
        absl::StrCat("Content-Length ", length, " but ", response.body.size(), " body bytes"));
  }
  return response;
}

// One HTTP/1.1 request on a fresh connection, read to the end.
absl::StatusOr<HttpResponse> Fetch(int port, const std::string& method, const std::string& path) {
  std::string request =
      absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
  if (method == "POST" || method == "PUT") request += "Content-Length: 0\r\n";
  request += "\r\n";
  return FetchRaw(port, method, request);
}

// Waits (up to the socket's 10 s receive timeout) for the server to end the
// connection without answering; returns what it read instead, if anything.
std::string ReadUntilClosed(const Socket& socket) {
  std::string received;
  char buffer[256];
  while (true) {
    ssize_t n = recv(socket.fd(), buffer, sizeof(buffer), 0);
    if (n == 0) return received;
    if (n < 0) {
      // A connection still in the listen queue when the server stopped is reset.
      if (errno == ECONNRESET) return received;
      return received + absl::StrCat("<recv: ", std::strerror(errno), ">");
    }
    received.append(buffer, static_cast<size_t>(n));
  }
}

MetricsHttpServerOptions LoopbackAnyPort() {
  MetricsHttpServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  return options;
}

// One server and registry for the suite's request tests.
class MetricsHttpServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    registry_ = new MetricsRegistry();
    requests_ = registry_->AddCounter("oclip_requests_total", "Finished calls.", {"rpc", "code"});
    queue_depth_ = registry_->AddGauge("oclip_queue_depth", "Items \"waiting\".", {"model"});
    latency_ = registry_->AddHistogram("oclip_request_duration_seconds", "Latency.", {"rpc"},
                                       ExponentialBuckets(0.001, 10, 4));
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
        MetricsHttpServer::Start(LoopbackAnyPort(), registry_);
    if (server.ok()) {
      server_ = server->release();
    } else {
      start_error_ = new absl::Status(server.status());
    }
  }

  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
    delete registry_;
    registry_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr) << (start_error_ != nullptr ? *start_error_ : absl::Status());
  }

  static MetricsRegistry* registry_;
  static CounterFamily* requests_;
  static GaugeFamily* queue_depth_;
  static HistogramFamily* latency_;
  static MetricsHttpServer* server_;
  static absl::Status* start_error_;
};

MetricsRegistry* MetricsHttpServerTest::registry_ = nullptr;
CounterFamily* MetricsHttpServerTest::requests_ = nullptr;
GaugeFamily* MetricsHttpServerTest::queue_depth_ = nullptr;
HistogramFamily* MetricsHttpServerTest::latency_ = nullptr;
MetricsHttpServer* MetricsHttpServerTest::server_ = nullptr;
absl::Status* MetricsHttpServerTest::start_error_ = nullptr;

TEST_F(MetricsHttpServerTest, ServesTheExpositionAtMetrics) {
  EXPECT_GT(server_->port(), 0);
  requests_->WithLabels({"Encode", "OK"})->Increment(3);
  queue_depth_->WithLabels({"ViT-B-32\n"})->Set(7);
  latency_->WithLabels({"Encode"})->Observe(0.02);

  absl::StatusOr<HttpResponse> first = Fetch(server_->port(), "GET", "/metrics");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->status, 200);
  EXPECT_EQ(first->Header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(first->body, registry_->Exposition());
  EXPECT_NE(first->body.find("oclip_requests_total{rpc=\"Encode\",code=\"OK\"} 3\n"),
            std::string::npos)
      << first->body;

  // Each scrape renders the registry anew.
  requests_->WithLabels({"Encode", "OK"})->Increment();
  latency_->WithLabels({"Classify"})->Observe(5);
  absl::StatusOr<HttpResponse> second = Fetch(server_->port(), "GET", "/metrics");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->status, 200);
  EXPECT_EQ(second->body, registry_->Exposition());
  EXPECT_NE(second->body, first->body);
  EXPECT_NE(second->body.find("oclip_requests_total{rpc=\"Encode\",code=\"OK\"} 4\n"),
            std::string::npos)
      << second->body;

  // A query string does not change the answer.
  absl::StatusOr<HttpResponse> with_query = Fetch(server_->port(), "GET", "/metrics?x=1");
  ASSERT_TRUE(with_query.ok()) << with_query.status();
  EXPECT_EQ(with_query->status, 200);
  EXPECT_EQ(with_query->body, registry_->Exposition());
}

TEST_F(MetricsHttpServerTest, OtherPathsAreNotFound) {
  // Files next to the test (the working directory) are not served either.
  for (const char* path : {"/", "/metrics/", "/metricsx", "/other", "/index.html",
                           "/CTestTestfile.cmake", "/../../etc/passwd"}) {
    absl::StatusOr<HttpResponse> response = Fetch(server_->port(), "GET", path);
    ASSERT_TRUE(response.ok()) << path << ": " << response.status();
    EXPECT_EQ(response->status, 404) << path;
    EXPECT_EQ(response->body.find("# TYPE"), std::string::npos) << path;
  }
}

TEST_F(MetricsHttpServerTest, OtherMethodsAreNotAllowed) {
  for (const char* method : {"POST", "PUT", "DELETE", "HEAD"}) {
    absl::StatusOr<HttpResponse> response = Fetch(server_->port(), method, "/metrics");
    ASSERT_TRUE(response.ok()) << method << ": " << response.status();
    EXPECT_EQ(response->status, 405) << method;
    EXPECT_EQ(response->Header("allow"), "GET") << method;
    if (std::string(method) == "HEAD") {
      EXPECT_EQ(response->body, "");
    }
  }
  // A request body the server does not read does not cost the client the
  // answer.
  absl::StatusOr<HttpResponse> with_body =
      FetchRaw(server_->port(), "POST",
               "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello");
  ASSERT_TRUE(with_body.ok()) << with_body.status();
  EXPECT_EQ(with_body->status, 405);
}

TEST_F(MetricsHttpServerTest, OversizedRequestHeaderIsRefused) {
  // A complete request whose headers are over 16 KiB, and one that never ends
  // its headers.
  const std::string filler(20 * 1024, 'a');
  for (const std::string& request :
       {absl::StrCat("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ", filler,
                     "\r\n\r\n"),
        absl::StrCat("GET /metrics HTTP/1.1\r\nX-Filler: ", filler)}) {
    absl::StatusOr<HttpResponse> response = FetchRaw(server_->port(), "GET", request);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, 431);
    EXPECT_EQ(response->body.find("# TYPE"), std::string::npos);
  }
  // Headers just under the cap are fine.
  absl::StatusOr<HttpResponse> response = FetchRaw(
      server_->port(), "GET",
      absl::StrCat("GET /metrics HTTP/1.1\r\nX-Filler: ", std::string(15 * 1024, 'a'),
                   "\r\n\r\n"));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
}

TEST_F(MetricsHttpServerTest, MalformedRequestLineIsBadRequest) {
  for (const char* request : {"NONSENSE\r\n\r\n", "GET /metrics\r\n\r\n",
                              "GET /metrics SPDY/3\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n"}) {
    absl::StatusOr<HttpResponse> response = FetchRaw(server_->port(), "GET", request);
    ASSERT_TRUE(response.ok()) << request << ": " << response.status();
    EXPECT_EQ(response->status, 400) << request;
  }
}

TEST_F(MetricsHttpServerTest, AnswersConcurrentScrapesWhileMetricsChange) {
  constexpr int kClients = 4;
  constexpr int kScrapesPerClient = 5;
  Counter* counter = requests_->WithLabels({"Scrape", "OK"});
  std::vector<int> ok_responses(kClients, 0);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kScrapesPerClient; ++i) {
        counter->Increment();
        absl::StatusOr<HttpResponse> response = Fetch(server_->port(), "GET", "/metrics");
        if (response.ok() && response->status == 200 &&
            response->body.find("# TYPE oclip_requests_total counter\n") != std::string::npos) {
          ++ok_responses[c];
        }
      }
    });
  }
  for (std::thread& client : clients) client.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(ok_responses[c], kScrapesPerClient) << c;
  EXPECT_EQ(counter->Value(), kClients * kScrapesPerClient);
}

TEST_F(MetricsHttpServerTest, SecondServerOnTheSamePortIsUnavailable) {
  MetricsHttpServerOptions options = LoopbackAnyPort();
  options.port = server_->port();
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start(options, registry_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_NE(second.status().message().find(absl::StrCat("127.0.0.1:", server_->port())),
            absl::string_view::npos)
      << second.status();
  // The first server is unaffected.
  absl::StatusOr<HttpResponse> response = Fetch(server_->port(), "GET", "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
}

TEST(MetricsHttpServerLifetimeTest, StopsListeningWhenDestroyed) {
  MetricsRegistry registry;
  registry.AddGauge("up", "1 while serving.")->WithLabels({})->Set(1);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(LoopbackAnyPort(), &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  absl::StatusOr<HttpResponse> response = Fetch(port, "GET", "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->body, "# HELP up 1 while serving.\n# TYPE up gauge\nup 1\n");

  server->reset();
  Socket socket(::socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_GE(socket.fd(), 0);
  EXPECT_FALSE(ConnectToLoopback(socket, port).ok());
}

TEST(MetricsHttpServerLifetimeTest, SilentClientDoesNotBlockLaterScrapes) {
  MetricsRegistry registry;
  registry.AddGauge("up", "1 while serving.")->WithLabels({})->Set(1);
  MetricsHttpServerOptions options = LoopbackAnyPort();
  options.read_timeout = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(options, &registry);
  ASSERT_TRUE(server.ok()) << server.status();

  // Connects first and never sends a byte: the server serves connections one
  // at a time, so the scrape behind it waits for its read timeout.
  absl::StatusOr<std::unique_ptr<Socket>> silent = Connect((*server)->port());
  ASSERT_TRUE(silent.ok()) << silent.status();
  absl::StatusOr<HttpResponse> response = Fetch((*server)->port(), "GET", "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, registry.Exposition());
  // The silent client was dropped without an answer.
  EXPECT_EQ(ReadUntilClosed(**silent), "");
}

TEST(MetricsHttpServerLifetimeTest, DestructionIsPromptWhileAClientStalls) {
  MetricsRegistry registry;
  registry.AddGauge("up", "1 while serving.")->WithLabels({})->Set(1);
  MetricsHttpServerOptions options = LoopbackAnyPort();
  // Were the destructor to wait for the read timeout, this test would hang.
  options.read_timeout = absl::Hours(1);
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(options, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<HttpResponse> response = Fetch((*server)->port(), "GET", "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);

  // A client that sent half a request and stalls.
  absl::StatusOr<std::unique_ptr<Socket>> stalled = Connect((*server)->port());
  ASSERT_TRUE(stalled.ok()) << stalled.status();
  const std::string partial = "GET /metrics HTTP/1.1\r\n";
  ASSERT_EQ(send((*stalled)->fd(), partial.data(), partial.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(partial.size()));

  server->reset();
  EXPECT_EQ(ReadUntilClosed(**stalled), "");
}

TEST(MetricsHttpServerOptionsTest, InvalidOptionsAreInvalidArgument) {
  MetricsRegistry registry;
  EXPECT_EQ(MetricsHttpServer::Start(LoopbackAnyPort(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (int port : {-1, 65536}) {
    MetricsHttpServerOptions options = LoopbackAnyPort();
    options.port = port;
    EXPECT_EQ(MetricsHttpServer::Start(options, &registry).status().code(),
              absl::StatusCode::kInvalidArgument)
        << port;
  }
  for (const char* host : {"", "localhost", "::1", "999.0.0.1", "127.0.0.1:80", "127.0.0.1,0"}) {
    MetricsHttpServerOptions options = LoopbackAnyPort();
    options.host = host;
    EXPECT_EQ(MetricsHttpServer::Start(options, &registry).status().code(),
              absl::StatusCode::kInvalidArgument)
        << host;
  }
  for (absl::Duration timeout : {absl::ZeroDuration(), absl::Seconds(-1)}) {
    MetricsHttpServerOptions options = LoopbackAnyPort();
    options.read_timeout = timeout;
    EXPECT_EQ(MetricsHttpServer::Start(options, &registry).status().code(),
              absl::StatusCode::kInvalidArgument)
        << timeout;
  }
}

TEST(MetricsHttpServerOptionsTest, UnusableAddressIsUnavailable) {
  MetricsRegistry registry;
  MetricsHttpServerOptions options = LoopbackAnyPort();
  // TEST-NET-1 (RFC 5737): never an address of this machine.
  options.host = "192.0.2.1";
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start(options, &registry);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable) << server.status();
  EXPECT_NE(server.status().message().find("192.0.2.1:0"), absl::string_view::npos)
      << server.status();
}

}  // namespace
}  // namespace oclip
