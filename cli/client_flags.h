// The flags every command that talks to a running `oclip serve` shares
// (`oclip client ...`, `oclip bench serve`): where the server is, how to
// authenticate, and the call deadline.

#ifndef OCLIP_CLI_CLIENT_FLAGS_H_
#define OCLIP_CLI_CLIENT_FLAGS_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/flags.h"

namespace oclip::cli {

struct ClientFlags {
  std::string address = "localhost:50051";
  std::string token;      // Bearer token.
  std::string token_env;  // Or the name of an env var holding it.
  std::string tls_ca;     // PEM roots: connect with TLS.
  std::string tls_cert;   // Client certificate + key: mTLS.
  std::string tls_key;
  std::string tls_server_name;  // Override the name checked in the server certificate.
  std::string timeout = "60s";

  void Register(FlagSet& flags);

  absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect() const;
  // A context with the deadline and the bearer token set.
  absl::StatusOr<std::unique_ptr<grpc::ClientContext>> NewContext() const;
  absl::StatusOr<absl::Duration> Timeout() const;
};

}  // namespace oclip::cli

#endif  // OCLIP_CLI_CLIENT_FLAGS_H_
