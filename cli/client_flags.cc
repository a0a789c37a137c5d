#include "cli/client_flags.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip::cli {

void ClientFlags::Register(FlagSet& flags) {
  flags.AddString("address", &address, "server address host:port (localhost:50051)");
  flags.AddString("token", &token, "bearer token");
  flags.AddString("token-env", &token_env, "environment variable holding the bearer token");
  flags.AddString("tls-ca", &tls_ca, "PEM root certificates: connect with TLS");
  flags.AddString("tls-cert", &tls_cert, "PEM client certificate (mTLS)");
  flags.AddString("tls-key", &tls_key, "PEM client key (mTLS)");
  flags.AddString("tls-server-name", &tls_server_name,
                  "name to verify in the server certificate (default: the host)");
  flags.AddString("timeout", &timeout, "deadline of each call (60s)");
}

absl::StatusOr<absl::Duration> ClientFlags::Timeout() const {
  absl::Duration duration;
  if (!absl::ParseDuration(timeout, &duration) || duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout '", timeout, "': expected a duration such as 30s"));
  }
  return duration;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> ClientFlags::Connect() const {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(-1);
  arguments.SetMaxSendMessageSize(-1);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!tls_ca.empty()) {
    grpc::SslCredentialsOptions options;
    OCLIP_ASSIGN_OR_RETURN(options.pem_root_certs, ReadFileToString(tls_ca));
    if (!tls_cert.empty() || !tls_key.empty()) {
      OCLIP_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadFileToString(tls_cert));
      OCLIP_ASSIGN_OR_RETURN(options.pem_private_key, ReadFileToString(tls_key));
    }
    credentials = grpc::SslCredentials(options);
    if (!tls_server_name.empty()) {
      arguments.SetSslTargetNameOverride(tls_server_name);
    }
  } else if (!tls_cert.empty() || !tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert/--tls-key need --tls-ca");
  }
  return grpc::CreateCustomChannel(address, credentials, arguments);
}

absl::StatusOr<std::unique_ptr<grpc::ClientContext>> ClientFlags::NewContext() const {
  OCLIP_ASSIGN_OR_RETURN(absl::Duration duration, Timeout());
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + duration));
  std::string bearer = token;
  if (bearer.empty() && !token_env.empty()) {
    const char* value = std::getenv(token_env.c_str());
    if (value == nullptr || *value == '\0') {
      return absl::InvalidArgumentError(absl::StrCat("--token-env: $", token_env, " is not set"));
    }
    bearer = value;
  }
  if (!bearer.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", bearer));
  return context;
}

}  // namespace oclip::cli
