// Tests of core/download.h against a real HTTP server on 127.0.0.1.
#include "core/download.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/core/http_test_server.h"

namespace oclip {
namespace {

using ::oclip::testing::HttpRoute;
using ::oclip::testing::HttpTestServer;

// ---------------------------------------------------------------------------
// SHA-256: FIPS 180-4 / NIST CAVP example vectors.

TEST(Sha256Test, FipsVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
                      "jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, IncrementalUpdatesMatchOneShot) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 31 + 7));
  const std::string expected = Sha256Hex(data);
  for (size_t chunk : {1, 3, 55, 56, 63, 64, 65, 200}) {
    Sha256 sha;
    for (size_t pos = 0; pos < data.size(); pos += chunk) {
      sha.Update(absl::string_view(data).substr(pos, chunk));
    }
    EXPECT_EQ(ToHex(sha.Finish()), expected) << "chunk " << chunk;
  }
}

TEST(Sha256Test, MatchesFullHashOrPrefix) {
  const std::string hex = Sha256Hex("abc");
  EXPECT_TRUE(Sha256Matches(hex, hex));
  EXPECT_TRUE(Sha256Matches("BA7816BF", hex));
  EXPECT_TRUE(Sha256Matches("ba7816bf8f01", hex));
  EXPECT_FALSE(Sha256Matches("ba7816b", hex));  // too short to mean anything
  EXPECT_FALSE(Sha256Matches("ba7816bf8f02", hex));
  EXPECT_FALSE(Sha256Matches(hex + "00", hex));
}

// ---------------------------------------------------------------------------
// DownloadFile.

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

bool Exists(const std::string& path) { return std::filesystem::exists(path); }

// 100 KiB of non-repeating bytes: spans several socket writes and reads.
std::string Payload() {
  std::string bytes(100 * 1024, '\0');
  uint32_t x = 12345;
  for (char& c : bytes) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return bytes;
}

class DownloadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A proxy configured in the environment must not intercept loopback.
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
  }

  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/oclip_download_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    auto server = HttpTestServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    payload_ = Payload();
    sha_ = Sha256Hex(payload_);
    HttpRoute route;
    route.body = payload_;
    server_->SetRoute("/model.bin", route);
  }

  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  DownloadRequest Request(const std::string& path = "/model.bin") const {
    DownloadRequest request;
    request.url = server_->Url(path);
    request.destination = dest();
    request.sha256 = sha_;
    request.progress_bar = false;
    request.retry_delay_ms = 0;
    return request;
  }

  std::string dest() const { return dir_ + "/cache/model.bin"; }
  std::string part() const { return PartialDownloadPath(dest()); }

  std::string dir_;
  std::unique_ptr<HttpTestServer> server_;
  std::string payload_;
  std::string sha_;
};

TEST_F(DownloadTest, DownloadsAndVerifies) {
  std::vector<DownloadProgress> reports;
  DownloadRequest request = Request();
  request.progress = [&reports](const DownloadProgress& p) {
    reports.push_back(p);
    return true;
  };
  ASSERT_TRUE(DownloadFile(request).ok());
  EXPECT_EQ(ReadAll(dest()), payload_);
  EXPECT_FALSE(Exists(part()));
  ASSERT_EQ(server_->requests().size(), 1u);
  EXPECT_EQ(server_->requests()[0].Header("range"), "");
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back().downloaded_bytes, static_cast<int64_t>(payload_.size()));
  EXPECT_EQ(reports.back().total_bytes, static_cast<int64_t>(payload_.size()));
}

TEST_F(DownloadTest, AcceptsAHashPrefix) {
  DownloadRequest request = Request();
  request.sha256 = sha_.substr(0, 8);
  ASSERT_TRUE(DownloadFile(request).ok());
  EXPECT_EQ(ReadAll(dest()), payload_);
}

TEST_F(DownloadTest, ResumesAnInterruptedDownloadWithRange) {
  HttpRoute route;
  route.body = payload_;
  route.drop_after_bytes = 30000;
  route.drop_times = 1;
  server_->SetRoute("/model.bin", route);
  DownloadRequest request = Request();
  request.max_attempts = 1;

  absl::Status first = DownloadFile(request);
  EXPECT_EQ(first.code(), absl::StatusCode::kUnavailable) << first;
  EXPECT_FALSE(Exists(dest()));
  EXPECT_EQ(ReadAll(part()), payload_.substr(0, 30000));

  ASSERT_TRUE(DownloadFile(request).ok());
  EXPECT_EQ(ReadAll(dest()), payload_);
  EXPECT_FALSE(Exists(part()));
  auto requests = server_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].Header("range"), "");
  EXPECT_EQ(requests[1].Header("range"), "bytes=30000-");
}

TEST_F(DownloadTest, RetriesResumeWithinOneCall) {
  HttpRoute route;
  route.body = payload_;
  route.drop_after_bytes = 1000;
  route.drop_times = 2;
  server_->SetRoute("/model.bin", route);
  DownloadRequest request = Request();
  request.max_attempts = 3;
  ASSERT_TRUE(DownloadFile(request).ok());
  EXPECT_EQ(ReadAll(dest()), payload_);
  auto requests = server_->requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].Header("range"), "bytes=1000-");
  EXPECT_EQ(requests[2].Header("range"), "bytes=2000-");
}

TEST_F(DownloadTest, RestartsWhenTheServerIgnoresRange) {
  HttpRoute route;
  route.body = payload_;
  route.ignore_range = true;
  server_->SetRoute("/model.bin", route);
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(part(), payload_.substr(0, 5000));
  ASSERT_TRUE(DownloadFile(Request()).ok());
  EXPECT_EQ(ReadAll(dest()), payload_);
  EXPECT_EQ(server_->requests().at(0).Header("range"), "bytes=5000-");
}

TEST_F(DownloadTest, CompletePartIsVerifiedAndCommitted) {
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(part(), payload_);                 // e.g. killed between the last byte and the rename
  ASSERT_TRUE(DownloadFile(Request()).ok());  // the server answers 416
  EXPECT_EQ(ReadAll(dest()), payload_);
  EXPECT_EQ(server_->requests().size(), 1u);
}

TEST_F(DownloadTest, PartLongerThanTheFileStartsOver) {
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(part(), payload_ + "trailing garbage");
  ASSERT_TRUE(DownloadFile(Request()).ok());  // 416 without the right total
  EXPECT_EQ(ReadAll(dest()), payload_);
  auto requests = server_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].Header("range"), "");
}

TEST_F(DownloadTest, StalePartWithWrongBytesIsDownloadedAgain) {
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(part(), std::string(5000, 'x'));
  ASSERT_TRUE(DownloadFile(Request()).ok());
  EXPECT_EQ(ReadAll(dest()), payload_);
  auto requests = server_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].Header("range"), "bytes=5000-");
  EXPECT_EQ(requests[1].Header("range"), "");
}

TEST_F(DownloadTest, RejectsCorruptBytesAndRemovesThem) {
  std::string corrupt = payload_;
  corrupt[777] ^= 1;
  HttpRoute route;
  route.body = corrupt;
  server_->SetRoute("/model.bin", route);
  absl::Status status = DownloadFile(Request());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find(Sha256Hex(corrupt)), absl::string_view::npos) << status;
  EXPECT_FALSE(Exists(dest()));
  EXPECT_FALSE(Exists(part()));
}

TEST_F(DownloadTest, SkipsACachedValidFile) {
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(dest(), payload_);
  ASSERT_TRUE(DownloadFile(Request()).ok());
  EXPECT_TRUE(server_->requests().empty());
}

TEST_F(DownloadTest, AcceptsACachedFileWithoutChecksum) {
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(dest(), "anything");
  DownloadRequest request = Request();
  request.sha256.clear();
  ASSERT_TRUE(DownloadFile(request).ok());
  EXPECT_TRUE(server_->requests().empty());
  EXPECT_EQ(ReadAll(dest()), "anything");
}

TEST_F(DownloadTest, ReplacesACachedFileThatFailsTheChecksum) {
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(dest(), "truncated");
  ASSERT_TRUE(DownloadFile(Request()).ok());
  EXPECT_EQ(server_->requests().size(), 1u);
  EXPECT_EQ(ReadAll(dest()), payload_);
}

TEST_F(DownloadTest, ForceDownloadsAgain) {
  std::filesystem::create_directories(dir_ + "/cache");
  WriteAll(dest(), payload_);
  DownloadRequest request = Request();
  request.force = true;
  ASSERT_TRUE(DownloadFile(request).ok());
  EXPECT_EQ(server_->requests().size(), 1u);
}

TEST_F(DownloadTest, NotFound) {
  absl::Status status = DownloadFile(Request("/missing.bin"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_NE(status.message().find("404"), absl::string_view::npos) << status;
  EXPECT_FALSE(Exists(dest()));
  EXPECT_FALSE(Exists(part()));
}

TEST_F(DownloadTest, ServerErrorIsUnavailableAndRetried) {
  HttpRoute route;
  route.status = 503;
  server_->SetRoute("/model.bin", route);
  DownloadRequest request = Request();
  request.max_attempts = 2;
  absl::Status status = DownloadFile(request);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(server_->requests().size(), 2u);
  EXPECT_FALSE(Exists(dest()));
}

TEST_F(DownloadTest, FollowsRedirects) {
  HttpRoute redirect;
  redirect.redirect_to = "/model.bin";
  server_->SetRoute("/resolve/main/model.bin", redirect);
  ASSERT_TRUE(DownloadFile(Request("/resolve/main/model.bin")).ok());
  EXPECT_EQ(ReadAll(dest()), payload_);
  EXPECT_EQ(server_->requests().size(), 2u);
}

TEST_F(DownloadTest, ConnectionRefusedIsUnavailable) {
  DownloadRequest request = Request();
  server_->Stop();
  request.max_attempts = 1;
  absl::Status status = DownloadFile(request);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_FALSE(Exists(dest()));
}

TEST_F(DownloadTest, StalledTransferTimesOut) {
  HttpRoute route;
  route.body = payload_;
  route.stall_after_bytes = 100;
  server_->SetRoute("/model.bin", route);
  DownloadRequest request = Request();
  request.max_attempts = 1;
  request.total_timeout_ms = 300;
  absl::Status status = DownloadFile(request);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_FALSE(Exists(dest()));
  EXPECT_EQ(ReadAll(part()), payload_.substr(0, 100));  // kept for resuming
}

TEST_F(DownloadTest, ProgressCallbackCancels) {
  DownloadRequest request = Request();
  request.progress = [](const DownloadProgress&) { return false; };
  absl::Status status = DownloadFile(request);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_FALSE(Exists(dest()));
}

TEST_F(DownloadTest, AnotherDownloaderHoldingThePartFails) {
  std::filesystem::create_directories(dir_ + "/cache");
  int fd = ::open(part().c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  absl::Status status = DownloadFile(Request());
  ::close(fd);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(server_->requests().empty());
}

TEST_F(DownloadTest, RejectsBadRequests) {
  DownloadRequest request = Request();
  request.sha256 = "xyz";
  EXPECT_EQ(DownloadFile(request).code(), absl::StatusCode::kInvalidArgument);
  request = Request();
  request.url.clear();
  EXPECT_EQ(DownloadFile(request).code(), absl::StatusCode::kInvalidArgument);
  request = Request();
  request.url = "ftp://127.0.0.1/model.bin";
  request.max_attempts = 1;
  EXPECT_EQ(DownloadFile(request).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(server_->requests().empty());
}


TEST(FetchUrlTest, ReturnsTheBodyOrTheHttpErrorsCode) {
  auto server = HttpTestServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  HttpRoute page;
  page.body = "metric_total 3\n";
  (*server)->SetRoute("/metrics", page);
  HttpRoute forbidden;
  forbidden.status = 403;
  (*server)->SetRoute("/private", forbidden);

  absl::StatusOr<std::string> body = FetchUrl((*server)->Url("/metrics"));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(*body, page.body);
  EXPECT_EQ(FetchUrl((*server)->Url("/missing")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FetchUrl((*server)->Url("/private")).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(FetchUrl((*server)->Url("/metrics"), 10000, 4).status().code(),
            absl::StatusCode::kResourceExhausted);
  const std::string url = (*server)->Url("/metrics");
  (*server)->Stop();
  EXPECT_EQ(FetchUrl(url).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace oclip
