// End-to-end tests of `oclip serve`'s transport security and authentication:
// bearer tokens (--auth-tokens-file, --auth-tokens-env), TLS (--tls-cert,
// --tls-key) and mutual TLS (--tls-client-ca), each seen from a gRPC client
// that should be served and from clients that should be refused, and from
// the `oclip client` command line. Every refusing test ends with a good call
// and a clean shutdown, so a refused client cannot take the server down.
//
// The certificates are made at test time with the `openssl` command into the
// process's scratch folder (no keys are committed): a CA, a server
// certificate for localhost / 127.0.0.1 and a client certificate signed by
// it, and an unrelated second CA with its own client certificate. Without
// an `openssl` program the TLS tests skip.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "oclip/v1/clip.grpc.pb.h"
#include "tests/core/scoped_env.h"
#include "tests/core/scratch_dir.h"
#include "tests/server/server_process.h"

namespace oclip::testing {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// Long enough for a loaded machine, short enough that a connection that
// never completes fails the test instead of hanging it.
constexpr std::chrono::seconds kCallDeadline(10);
constexpr char kClientTimeoutFlag[] = "--timeout=10s";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

// ---------------------------------------------------------------------------
// Child processes (openssl, `oclip client`).

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by one.
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with stdin from /dev/null and its stdout and stderr
// in scratch files, and waits for it.
CommandResult RunCommand(const std::vector<std::string>& args) {
  static std::atomic<int> counter{0};
  const int n = counter.fetch_add(1);
  const std::string out_path = ScratchPath(absl::StrCat("command-", n, ".stdout"));
  const std::string err_path = ScratchPath(absl::StrCat("command-", n, ".stderr"));
  std::vector<std::string> storage = args;
  std::vector<char*> argv;
  for (std::string& arg : storage) argv.push_back(arg.data());
  argv.push_back(nullptr);

  CommandResult result;
  const int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (in < 0 || out < 0 || err < 0) {
    result.err = "cannot open the files of a child process";
  } else {
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(in, STDIN_FILENO);
      dup2(out, STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (pid < 0) {
      result.err = "fork failed";
    } else {
      int status = 0;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
  for (int fd : {in, out, err}) {
    if (fd >= 0) close(fd);
  }
  if (result.err.empty()) {
    result.out = ReadFile(out_path);
    result.err = ReadFile(err_path);
  }
  return result;
}

// `oclip client ARGS...`.
CommandResult RunClient(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {OCLIP_BINARY, "client"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

std::string Describe(const CommandResult& result) {
  return absl::StrCat("exit code ", result.exit_code, "\nstdout:\n", result.out, "\nstderr:\n",
                      result.err);
}

// ---------------------------------------------------------------------------
// Certificates.

// PEM files under the scratch folder.
struct Pki {
  std::string ca;  // Signs the server certificate and the client certificate.
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
  std::string other_ca;  // Unrelated to `ca`; signs other_client_cert.
  std::string other_client_cert;
  std::string other_client_key;
};

// The `openssl` program on PATH (or /usr/bin/openssl); empty if none.
std::string FindOpenssl() {
  const char* path = std::getenv("PATH");
  std::vector<std::string> dirs;
  if (path != nullptr) dirs = absl::StrSplit(path, ':', absl::SkipEmpty());
  dirs.push_back("/usr/bin");
  for (const std::string& dir : dirs) {
    const std::string candidate = dir + "/openssl";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

class CertificateMaker {
 public:
  CertificateMaker(std::string openssl, std::string dir)
      : openssl_(std::move(openssl)), dir_(std::move(dir)) {}

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // A self-signed CA: NAME.pem, NAME.key.
  absl::Status MakeCa(const std::string& name, const std::string& common_name) {
    return Openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-noenc", "-keyout", Path(name + ".key"), "-out", Path(name + ".pem"), "-days",
                    "2", "-subj", "/CN=" + common_name, "-addext",
                    "basicConstraints=critical,CA:TRUE", "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign"});
  }

  // NAME.pem, NAME.key signed by CA with the X.509v3 extensions `extensions`
  // (openssl extension-file lines).
  absl::Status MakeLeaf(const std::string& ca, const std::string& name,
                        const std::string& common_name, const std::string& extensions) {
    WriteFile(Path(name + ".ext"), extensions);
    absl::Status status =
        Openssl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-noenc", "-keyout", Path(name + ".key"), "-out", Path(name + ".csr"), "-subj",
                 "/CN=" + common_name});
    if (!status.ok()) return status;
    return Openssl({"x509", "-req", "-in", Path(name + ".csr"), "-CA", Path(ca + ".pem"),
                    "-CAkey", Path(ca + ".key"), "-set_serial", std::to_string(++serial_),
                    "-days", "2", "-extfile", Path(name + ".ext"), "-out",
                    Path(name + ".pem")});
  }

 private:
  absl::Status Openssl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {openssl_};
    argv.insert(argv.end(), args.begin(), args.end());
    const CommandResult result = RunCommand(argv);
    if (result.exit_code == 0) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat(absl::StrJoin(argv, " "), " failed: ", Describe(result)));
  }

  std::string openssl_;
  std::string dir_;
  int serial_ = 1;
};

absl::StatusOr<Pki> MakePki(const std::string& openssl) {
  const std::string dir = ScratchPath("pki");
  mkdir(dir.c_str(), 0700);
  CertificateMaker maker(openssl, dir);
  absl::Status status = maker.MakeCa("ca", "oclip test CA");
  if (status.ok()) status = maker.MakeCa("other-ca", "oclip unrelated test CA");
  if (status.ok()) {
    status = maker.MakeLeaf("ca", "server", "localhost",
                            "basicConstraints=CA:FALSE\n"
                            "keyUsage=critical,digitalSignature\n"
                            "extendedKeyUsage=serverAuth\n"
                            "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  }
  const std::string client_extensions =
      "basicConstraints=CA:FALSE\n"
      "keyUsage=critical,digitalSignature\n"
      "extendedKeyUsage=clientAuth\n";
  if (status.ok()) status = maker.MakeLeaf("ca", "client", "oclip test client", client_extensions);
  if (status.ok()) {
    status = maker.MakeLeaf("other-ca", "other-client", "oclip test client", client_extensions);
  }
  if (!status.ok()) return status;
  Pki pki;
  pki.ca = maker.Path("ca.pem");
  pki.server_cert = maker.Path("server.pem");
  pki.server_key = maker.Path("server.key");
  pki.client_cert = maker.Path("client.pem");
  pki.client_key = maker.Path("client.key");
  pki.other_ca = maker.Path("other-ca.pem");
  pki.other_client_cert = maker.Path("other-client.pem");
  pki.other_client_key = maker.Path("other-client.key");
  return pki;
}

// ---------------------------------------------------------------------------
// gRPC clients.

std::shared_ptr<grpc::Channel> PlaintextChannel(const ServerProcess& server) {
  return grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
}

struct TlsClientOptions {
  std::string roots;  // PEM file the client trusts.
  std::string cert;   // PEM files of the client certificate: empty = none.
  std::string key;
  std::string host = "localhost";     // The name in the target address.
  std::string target_name_override;   // Name checked in the server certificate.
};

std::shared_ptr<grpc::Channel> TlsChannel(const ServerProcess& server,
                                          const TlsClientOptions& options) {
  grpc::SslCredentialsOptions credentials;
  credentials.pem_root_certs = ReadFile(options.roots);
  if (!options.cert.empty()) {
    credentials.pem_cert_chain = ReadFile(options.cert);
    credentials.pem_private_key = ReadFile(options.key);
  }
  grpc::ChannelArguments arguments;
  if (!options.target_name_override.empty()) {
    arguments.SetSslTargetNameOverride(options.target_name_override);
  }
  return grpc::CreateCustomChannel(absl::StrCat(options.host, ":", server.port()),
                                   grpc::SslCredentials(credentials), arguments);
}

// A context with the call deadline and, unless empty, this `authorization`
// metadata value.
std::unique_ptr<grpc::ClientContext> NewContext(const std::string& authorization = "") {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  if (!authorization.empty()) context->AddMetadata("authorization", authorization);
  return context;
}

std::string Bearer(const std::string& token) { return "Bearer " + token; }

grpc::Status EncodeText(const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& authorization, v1::EncodeResponse* response) {
  v1::EncodeTextRequest request;
  request.add_texts("a photo of a cat");
  request.add_texts("a diagram");
  auto context = NewContext(authorization);
  return v1::Clip::NewStub(channel)->EncodeText(context.get(), request, response);
}

grpc::Status EncodeText(const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& authorization = "") {
  v1::EncodeResponse response;
  return EncodeText(channel, authorization, &response);
}

grpc::Status ListModels(const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& authorization, v1::ListModelsResponse* response) {
  auto context = NewContext(authorization);
  return v1::Clip::NewStub(channel)->ListModels(context.get(), v1::ListModelsRequest(), response);
}

grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service, HealthCheckResponse* response) {
  HealthCheckRequest request;
  request.set_service(service);
  auto context = NewContext();
  return grpc::health::v1::Health::NewStub(channel)->Check(context.get(), request, response);
}

v1::ImageInput ReferenceImage() {
  v1::ImageInput image;
  image.set_data(ReadFile(ReferencePath("images/CLIP.png")));
  return image;
}

std::string Describe(const grpc::Status& status) {
  return absl::StrCat("code ", status.error_code(), ": ", status.error_message());
}

// Expects a successful EncodeText that returns one embedding per text.
void ExpectEncodeTextServed(const std::shared_ptr<grpc::Channel>& channel,
                            const std::string& authorization = "") {
  v1::EncodeResponse response;
  const grpc::Status status = EncodeText(channel, authorization, &response);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(response.embeddings_size(), 2);
  EXPECT_GT(response.dim(), 0);
  for (const v1::Embedding& embedding : response.embeddings()) {
    EXPECT_EQ(embedding.values_size(), response.dim());
  }
}

// ---------------------------------------------------------------------------
// Base fixture: one server per test, stopped (and required to exit 0) at the
// end.

class ServeSecurityFixture : public ::testing::Test {
 protected:
  void StartServer(const std::vector<std::string>& extra) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(TinyVitServeArgs(extra));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    const absl::Status ready = server_->WaitUntilReady();
    ASSERT_TRUE(ready.ok()) << ready;
  }

  // SIGTERM; the server must exit 0. Returns its stderr.
  std::string StopServer() {
    if (server_ == nullptr) return "";
    const int exit_code = server_->Terminate();
    const std::string log = server_->Stderr();
    EXPECT_EQ(exit_code, 0) << log;
    server_.reset();
    return log;
  }

  void TearDown() override { StopServer(); }

  std::unique_ptr<ServerProcess> server_;
};

// ---------------------------------------------------------------------------
// Bearer tokens.

constexpr char kFirstToken[] = "first-token-3f9a1c";
constexpr char kSecondToken[] = "second-token-77b2e0";
constexpr char kWrongToken[] = "wrong-token-d41d8c";

class ServeAuthTest : public ServeSecurityFixture {
 protected:
  // A tokens file with a comment, a blank line and surrounding blanks.
  static std::string WriteTokensFile() {
    const std::string path = ScratchPath("tokens.txt");
    WriteFile(path, absl::StrCat("# tokens for the security test\n", kFirstToken, "\n\n  ",
                                 kSecondToken, "  \n"));
    return path;
  }

  void StartWithTokensFile() { StartServer({"--auth-tokens-file", WriteTokensFile()}); }
};

TEST_F(ServeAuthTest, TokensFromFileAreAccepted) {
  ASSERT_NO_FATAL_FAILURE(StartWithTokensFile());
  auto channel = PlaintextChannel(*server_);
  ExpectEncodeTextServed(channel, Bearer(kFirstToken));
  ExpectEncodeTextServed(channel, Bearer(kSecondToken));
}

TEST_F(ServeAuthTest, MissingOrWrongTokenIsUnauthenticated) {
  ASSERT_NO_FATAL_FAILURE(StartWithTokensFile());
  auto channel = PlaintextChannel(*server_);
  const std::string first = kFirstToken;
  const std::vector<std::string> refused = {
      "",                                      // No metadata at all.
      Bearer(kWrongToken),                     //
      Bearer(first.substr(0, first.size() - 1)),  // A prefix of a valid token.
      Bearer(first + "0"),                     // A valid token plus a suffix.
      first,                                   // No scheme.
      "Basic " + first,                        // Another scheme.
      "Bearer",                                // A scheme without a token.
      Bearer(absl::StrCat(kFirstToken, ",", kSecondToken)),
  };
  for (const std::string& authorization : refused) {
    SCOPED_TRACE("authorization: '" + authorization + "'");
    const grpc::Status status = EncodeText(channel, authorization);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
    EXPECT_FALSE(absl::StrContains(status.error_message(), kWrongToken)) << Describe(status);
    EXPECT_FALSE(absl::StrContains(status.error_message(), kFirstToken)) << Describe(status);
  }
  // The refusals did not hurt the server, and it logged no token.
  ExpectEncodeTextServed(channel, Bearer(kFirstToken));
  const std::string log = StopServer();
  EXPECT_FALSE(absl::StrContains(log, kWrongToken)) << log;
  EXPECT_FALSE(absl::StrContains(log, kFirstToken)) << log;
  EXPECT_FALSE(absl::StrContains(log, kSecondToken)) << log;
}

TEST_F(ServeAuthTest, EveryClipMethodRequiresTheToken) {
  ASSERT_NO_FATAL_FAILURE(StartWithTokensFile());
  auto channel = PlaintextChannel(*server_);
  auto stub = v1::Clip::NewStub(channel);

  v1::ListModelsResponse models;
  grpc::Status status = ListModels(channel, "", &models);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
  EXPECT_EQ(models.models_size(), 0);
  status = ListModels(channel, Bearer(kWrongToken), &models);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
  status = ListModels(channel, Bearer(kFirstToken), &models);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(models.models_size(), 1);

  v1::EncodeImageRequest encode_image;
  *encode_image.add_images() = ReferenceImage();
  for (const std::string& authorization : {std::string(), Bearer(kWrongToken)}) {
    SCOPED_TRACE("authorization: '" + authorization + "'");
    v1::EncodeResponse response;
    auto context = NewContext(authorization);
    status = stub->EncodeImage(context.get(), encode_image, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
    EXPECT_EQ(response.embeddings_size(), 0);
  }

  v1::ClassifyRequest classify;
  *classify.add_images() = ReferenceImage();
  classify.add_labels("cat");
  classify.add_labels("diagram");
  for (const std::string& authorization : {std::string(), Bearer(kWrongToken)}) {
    SCOPED_TRACE("authorization: '" + authorization + "'");
    v1::ClassifyResponse response;
    auto context = NewContext(authorization);
    status = stub->Classify(context.get(), classify, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
    EXPECT_EQ(response.classifications_size(), 0);
  }

  for (const std::string& authorization : {std::string(), Bearer(kWrongToken)}) {
    SCOPED_TRACE("authorization: '" + authorization + "'");
    auto context = NewContext(authorization);
    auto stream = stub->EncodeImageStream(context.get());
    v1::EncodeImageStreamRequest request;
    request.set_id(1);
    *request.mutable_request()->add_images() = ReferenceImage();
    // The server may have closed the stream already: a failed write is fine,
    // the status says why.
    stream->Write(request);
    stream->WritesDone();
    int answers = 0;
    v1::EncodeImageStreamResponse answer;
    while (stream->Read(&answer)) ++answers;
    status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
    EXPECT_EQ(answers, 0);
  }

  // With the token, the same requests are served.
  {
    v1::EncodeResponse response;
    auto context = NewContext(Bearer(kSecondToken));
    status = stub->EncodeImage(context.get(), encode_image, &response);
    ASSERT_TRUE(status.ok()) << Describe(status);
    EXPECT_EQ(response.embeddings_size(), 1);
  }
  {
    v1::ClassifyResponse response;
    auto context = NewContext(Bearer(kSecondToken));
    status = stub->Classify(context.get(), classify, &response);
    ASSERT_TRUE(status.ok()) << Describe(status);
    EXPECT_EQ(response.classifications_size(), 1);
  }
}

TEST_F(ServeAuthTest, HealthNeedsNoToken) {
  ASSERT_NO_FATAL_FAILURE(StartWithTokensFile());
  auto channel = PlaintextChannel(*server_);
  HealthCheckResponse health;
  grpc::Status status = HealthCheck(channel, "", &health);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(health.status(), HealthCheckResponse::SERVING);

  // The per-model service too; its name comes from ListModels (with the token).
  v1::ListModelsResponse models;
  status = ListModels(channel, Bearer(kFirstToken), &models);
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_EQ(models.models_size(), 1);
  status = HealthCheck(channel, models.models(0).name(), &health);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(health.status(), HealthCheckResponse::SERVING);
}

constexpr char kTokensEnv[] = "OCLIP_SECURITY_TEST_TOKENS";

TEST_F(ServeAuthTest, TokensFromEnvironmentAreAccepted) {
  {
    // The child copies the environment when it starts.
    ScopedEnv env(kTokensEnv, absl::StrCat(kFirstToken, ", ", kSecondToken));
    ASSERT_NO_FATAL_FAILURE(StartServer({"--auth-tokens-env", kTokensEnv}));
  }
  auto channel = PlaintextChannel(*server_);
  ExpectEncodeTextServed(channel, Bearer(kFirstToken));
  ExpectEncodeTextServed(channel, Bearer(kSecondToken));
  for (const std::string& authorization :
       {std::string(), Bearer(kWrongToken), Bearer(absl::StrCat(kFirstToken, ",", kSecondToken))}) {
    SCOPED_TRACE("authorization: '" + authorization + "'");
    const grpc::Status status = EncodeText(channel, authorization);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
    EXPECT_FALSE(absl::StrContains(status.error_message(), kWrongToken)) << Describe(status);
  }
  v1::ListModelsResponse models;
  const grpc::Status status = ListModels(channel, "", &models);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
  HealthCheckResponse health;
  const grpc::Status health_status = HealthCheck(channel, "", &health);
  ASSERT_TRUE(health_status.ok()) << Describe(health_status);
  EXPECT_EQ(health.status(), HealthCheckResponse::SERVING);
  ExpectEncodeTextServed(channel, Bearer(kFirstToken));
}

TEST_F(ServeAuthTest, TokensFromFileAndEnvironmentAreBothAccepted) {
  const std::string file = ScratchPath("file-token.txt");
  WriteFile(file, absl::StrCat(kFirstToken, "\n"));
  {
    ScopedEnv env(kTokensEnv, kSecondToken);
    ASSERT_NO_FATAL_FAILURE(
        StartServer({"--auth-tokens-file", file, "--auth-tokens-env", kTokensEnv}));
  }
  auto channel = PlaintextChannel(*server_);
  ExpectEncodeTextServed(channel, Bearer(kFirstToken));
  ExpectEncodeTextServed(channel, Bearer(kSecondToken));
  const grpc::Status status = EncodeText(channel, Bearer(kWrongToken));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
}

// ---------------------------------------------------------------------------
// TLS.

class ServeTlsTest : public ServeSecurityFixture {
 protected:
  void SetUp() override {
    static const std::string* const openssl = new std::string(FindOpenssl());
    if (openssl->empty()) GTEST_SKIP() << "no openssl program to make test certificates with";
    // Made once per test process (CTest runs each test in a process of its own).
    static const absl::StatusOr<Pki>* const pki = new absl::StatusOr<Pki>(MakePki(*openssl));
    ASSERT_TRUE(pki->ok()) << pki->status();
    pki_ = **pki;
  }

  std::vector<std::string> TlsFlags() const {
    return {"--tls-cert", pki_.server_cert, "--tls-key", pki_.server_key};
  }
  std::vector<std::string> MutualTlsFlags() const {
    std::vector<std::string> flags = TlsFlags();
    flags.insert(flags.end(), {"--tls-client-ca", pki_.ca});
    return flags;
  }

  // A client that trusts the CA and, if asked, presents the client
  // certificate.
  std::shared_ptr<grpc::Channel> GoodChannel(bool with_client_cert = false) const {
    TlsClientOptions options;
    options.roots = pki_.ca;
    if (with_client_cert) {
      options.cert = pki_.client_cert;
      options.key = pki_.client_key;
    }
    return TlsChannel(*server_, options);
  }

  // Expects a refused connection: UNAVAILABLE, for the Clip service and for
  // health alike.
  void ExpectRefused(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::Status status = EncodeText(channel);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(status);
    HealthCheckResponse health;
    status = HealthCheck(channel, "", &health);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(status);
  }

  Pki pki_;
};

TEST_F(ServeTlsTest, ClientTrustingTheCaIsServed) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsFlags()));
  auto channel = GoodChannel();
  ExpectEncodeTextServed(channel);
  v1::ListModelsResponse models;
  grpc::Status status = ListModels(channel, "", &models);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(models.models_size(), 1);
  HealthCheckResponse health;
  status = HealthCheck(channel, "", &health);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(health.status(), HealthCheckResponse::SERVING);
}

TEST_F(ServeTlsTest, ClientConnectingByIpAddressIsServed) {
  // The certificate names 127.0.0.1 as well.
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsFlags()));
  TlsClientOptions options;
  options.roots = pki_.ca;
  options.host = "127.0.0.1";
  ExpectEncodeTextServed(TlsChannel(*server_, options));
}

TEST_F(ServeTlsTest, PlaintextClientIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsFlags()));
  ExpectRefused(PlaintextChannel(*server_));
  ExpectEncodeTextServed(GoodChannel());
}

TEST_F(ServeTlsTest, ClientTrustingAnotherCaIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsFlags()));
  TlsClientOptions options;
  options.roots = pki_.other_ca;
  ExpectRefused(TlsChannel(*server_, options));
  ExpectEncodeTextServed(GoodChannel());
}

TEST_F(ServeTlsTest, ClientExpectingAnotherServerNameIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartServer(TlsFlags()));
  TlsClientOptions options;
  options.roots = pki_.ca;
  options.target_name_override = "not-this-server.example";
  ExpectRefused(TlsChannel(*server_, options));
  ExpectEncodeTextServed(GoodChannel());
}

TEST_F(ServeTlsTest, TlsAndTokenAreBothChecked) {
  const std::string tokens = ScratchPath("tls-tokens.txt");
  WriteFile(tokens, absl::StrCat(kFirstToken, "\n"));
  std::vector<std::string> flags = TlsFlags();
  flags.insert(flags.end(), {"--auth-tokens-file", tokens});
  ASSERT_NO_FATAL_FAILURE(StartServer(flags));
  auto channel = GoodChannel();
  for (const std::string& authorization : {std::string(), Bearer(kWrongToken)}) {
    SCOPED_TRACE("authorization: '" + authorization + "'");
    const grpc::Status status = EncodeText(channel, authorization);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(status);
    EXPECT_FALSE(absl::StrContains(status.error_message(), kWrongToken)) << Describe(status);
  }
  // The right token over plaintext is still refused: TLS comes first.
  ExpectRefused(PlaintextChannel(*server_));
  ExpectEncodeTextServed(channel, Bearer(kFirstToken));
}

TEST_F(ServeTlsTest, ClientCommandSpeaksTlsAndSendsTheToken) {
  const std::string tokens = ScratchPath("cli-tokens.txt");
  WriteFile(tokens, absl::StrCat(kFirstToken, "\n"));
  std::vector<std::string> flags = TlsFlags();
  flags.insert(flags.end(), {"--auth-tokens-file", tokens});
  ASSERT_NO_FATAL_FAILURE(StartServer(flags));
  const std::string localhost = absl::StrCat("localhost:", server_->port());

  // Health is exempt from the token.
  CommandResult result =
      RunClient({"health", "--address", localhost, "--tls-ca", pki_.ca, kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 0) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.out, "SERVING")) << Describe(result);

  // Without --tls-ca the client speaks plaintext and is refused.
  result = RunClient({"health", "--address", localhost, kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.err, "UNAVAILABLE")) << Describe(result);

  // Trusting the wrong CA: refused.
  result = RunClient(
      {"health", "--address", localhost, "--tls-ca", pki_.other_ca, kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.err, "UNAVAILABLE")) << Describe(result);

  const std::string output = ScratchPath("cli-encode");
  mkdir(output.c_str(), 0755);
  result = RunClient({"encode-text", "--address", localhost, "--tls-ca", pki_.ca, "--token",
                      kFirstToken, "--text", "a photo of a cat", "--output", output,
                      kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 0) << Describe(result);
  EXPECT_EQ(access((output + "/text_features.npy").c_str(), R_OK), 0) << Describe(result);

  result = RunClient({"encode-text", "--address", localhost, "--tls-ca", pki_.ca, "--token",
                      kWrongToken, "--text", "a photo of a cat", kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.err, "UNAUTHENTICATED")) << Describe(result);
  EXPECT_FALSE(absl::StrContains(result.err, kWrongToken)) << Describe(result);

  result = RunClient({"encode-text", "--address", localhost, "--tls-ca", pki_.ca, "--text",
                      "a photo of a cat", kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.err, "UNAUTHENTICATED")) << Describe(result);

  {
    // --token-env: the client inherits this process's environment.
    ScopedEnv env("OCLIP_SECURITY_TEST_CLIENT_TOKEN", kFirstToken);
    result = RunClient({"encode-text", "--address", localhost, "--tls-ca", pki_.ca,
                        "--token-env", "OCLIP_SECURITY_TEST_CLIENT_TOKEN", "--text",
                        "a photo of a cat", kClientTimeoutFlag});
    EXPECT_EQ(result.exit_code, 0) << Describe(result);
  }

  // By IP address, with the name checked against the certificate's IP entry.
  result = RunClient({"models", "--address", absl::StrCat("127.0.0.1:", server_->port()),
                      "--tls-ca", pki_.ca, "--token", kFirstToken, kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 0) << Describe(result);
  v1::ListModelsResponse models;
  const grpc::Status status = ListModels(GoodChannel(), Bearer(kFirstToken), &models);
  ASSERT_TRUE(status.ok()) << Describe(status);
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_TRUE(absl::StrContains(result.out, models.models(0).name())) << Describe(result);

  // --tls-server-name: checked against the certificate.
  result = RunClient({"health", "--address", absl::StrCat("127.0.0.1:", server_->port()),
                      "--tls-ca", pki_.ca, "--tls-server-name", "localhost", kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 0) << Describe(result);
  result = RunClient({"health", "--address", localhost, "--tls-ca", pki_.ca, "--tls-server-name",
                      "not-this-server.example", kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);

  ExpectEncodeTextServed(GoodChannel(), Bearer(kFirstToken));
}

// ---------------------------------------------------------------------------
// Mutual TLS. A suite of its own, so that `*Tls*` filters select it.

class ServeMutualTlsTest : public ServeTlsTest {};

TEST_F(ServeMutualTlsTest, ClientWithCertificateFromTheCaIsServed) {
  ASSERT_NO_FATAL_FAILURE(StartServer(MutualTlsFlags()));
  auto channel = GoodChannel(/*with_client_cert=*/true);
  ExpectEncodeTextServed(channel);
  HealthCheckResponse health;
  const grpc::Status status = HealthCheck(channel, "", &health);
  ASSERT_TRUE(status.ok()) << Describe(status);
  EXPECT_EQ(health.status(), HealthCheckResponse::SERVING);
}

TEST_F(ServeMutualTlsTest, ClientWithoutCertificateIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartServer(MutualTlsFlags()));
  ExpectRefused(GoodChannel(/*with_client_cert=*/false));
  ExpectRefused(PlaintextChannel(*server_));
  ExpectEncodeTextServed(GoodChannel(/*with_client_cert=*/true));
}

TEST_F(ServeMutualTlsTest, ClientWithCertificateFromAnotherCaIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartServer(MutualTlsFlags()));
  TlsClientOptions options;
  options.roots = pki_.ca;
  options.cert = pki_.other_client_cert;
  options.key = pki_.other_client_key;
  ExpectRefused(TlsChannel(*server_, options));
  ExpectEncodeTextServed(GoodChannel(/*with_client_cert=*/true));
}

TEST_F(ServeMutualTlsTest, ClientCommandPresentsItsCertificate) {
  ASSERT_NO_FATAL_FAILURE(StartServer(MutualTlsFlags()));
  const std::string localhost = absl::StrCat("localhost:", server_->port());

  CommandResult result =
      RunClient({"health", "--address", localhost, "--tls-ca", pki_.ca, "--tls-cert",
                 pki_.client_cert, "--tls-key", pki_.client_key, kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 0) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.out, "SERVING")) << Describe(result);

  result = RunClient({"encode-text", "--address", localhost, "--tls-ca", pki_.ca, "--tls-cert",
                      pki_.client_cert, "--tls-key", pki_.client_key, "--text",
                      "a photo of a cat", kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 0) << Describe(result);

  // No client certificate.
  result = RunClient({"health", "--address", localhost, "--tls-ca", pki_.ca, kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.err, "UNAVAILABLE")) << Describe(result);

  // A certificate from the unrelated CA.
  result = RunClient({"health", "--address", localhost, "--tls-ca", pki_.ca, "--tls-cert",
                      pki_.other_client_cert, "--tls-key", pki_.other_client_key,
                      kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.err, "UNAVAILABLE")) << Describe(result);

  // A client certificate needs the roots to go with it (a usage error, no call).
  result = RunClient({"health", "--address", localhost, "--tls-cert", pki_.client_cert,
                      "--tls-key", pki_.client_key, kClientTimeoutFlag});
  EXPECT_EQ(result.exit_code, 1) << Describe(result);
  EXPECT_TRUE(absl::StrContains(result.err, "--tls-ca")) << Describe(result);

  ExpectEncodeTextServed(GoodChannel(/*with_client_cert=*/true));
}

}  // namespace
}  // namespace oclip::testing
