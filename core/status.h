// Status helpers used at every library boundary.
//
// Debian 12's Abseil (20220623) has no RETURN_IF_ERROR / ASSIGN_OR_RETURN, so
// the project defines its own, once, here. Both evaluate their argument exactly
// once and only return from the enclosing function on a non-OK status.

#ifndef OCLIP_CORE_STATUS_H_
#define OCLIP_CORE_STATUS_H_

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#define OCLIP_STATUS_CONCAT_INNER_(a, b) a##b
#define OCLIP_STATUS_CONCAT_(a, b) OCLIP_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function with `expr`'s status if it is not OK.
#define OCLIP_RETURN_IF_ERROR(expr)                    \
  do {                                                 \
    ::absl::Status oclip_status_ = (expr);             \
    if (!oclip_status_.ok()) return oclip_status_;     \
  } while (false)

// `OCLIP_ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns `x` from the
// value of a StatusOr, or returns its status from the current function.
#define OCLIP_ASSIGN_OR_RETURN(lhs, expr)                                   \
  OCLIP_ASSIGN_OR_RETURN_IMPL_(OCLIP_STATUS_CONCAT_(oclip_statusor_, __LINE__), \
                               lhs, expr)

#define OCLIP_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace oclip {

// The status for an errno of a file or system call, so that every reader
// maps them alike: "<what>: <strerror>" with NOT_FOUND (ENOENT, ENOTDIR),
// PERMISSION_DENIED (EACCES, EPERM, EROFS), RESOURCE_EXHAUSTED (ENOSPC,
// EDQUOT), INVALID_ARGUMENT (EISDIR, ENAMETOOLONG, ELOOP), INTERNAL otherwise.
inline absl::Status ErrnoToStatus(int error, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    case EISDIR:
    case ENAMETOOLONG:
    case ELOOP:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace oclip

#endif  // OCLIP_CORE_STATUS_H_
