// The seams between absl::Status and gRPC: the one status mapping, and
// bearer-token authentication of calls.
//
// Thread safety: TokenAuthenticator is immutable after construction.

#ifndef OCLIP_SERVER_GRPC_UTIL_H_
#define OCLIP_SERVER_GRPC_UTIL_H_

#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace oclip {

// Same code (absl and gRPC share the numbering), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The canonical name of a code ("INVALID_ARGUMENT") for metrics labels.
std::string StatusCodeName(absl::StatusCode code);

// Checks `authorization: Bearer <token>` metadata against a fixed set of
// tokens. With no tokens, every call is allowed (auth off).
class TokenAuthenticator {
 public:
  explicit TokenAuthenticator(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}

  bool enabled() const { return !tokens_.empty(); }
  // OK, or UNAUTHENTICATED saying what is missing (never echoing the token).
  absl::Status Check(const grpc::ServerContextBase& context) const;

 private:
  std::vector<std::string> tokens_;
};

}  // namespace oclip

#endif  // OCLIP_SERVER_GRPC_UTIL_H_
