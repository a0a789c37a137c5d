// A shard opened as a stream of bytes: a local file, or the standard output
// of a `pipe:COMMAND` (webdataset's convention, e.g.
// "pipe:curl -s -L https://host/00001.tar" or "pipe:aws s3 cp s3://b/1.tar -").
// Reads are streaming: nothing holds the whole shard in memory.
//
// `pipe:` commands run as `/bin/sh -c COMMAND` in a process group of their
// own, with stdin from /dev/null, stderr inherited (their complaints reach the
// job's log) and SIGPIPE at its default. The child is always reaped, so no
// zombie outlives the ByteSource:
//   - reading to the end waits for the command and checks its exit status;
//     a failure is UNAVAILABLE "pipe command `...` exited with status N" (or
//     "was killed by signal N") — fetching may work if retried;
//   - Close() (or the destructor) before the end kills the command's whole
//     process group with SIGKILL and reaps the shell: abandoning a stream is
//     not an error.
// No thread is started.
//
// Errors from Open: NOT_FOUND (no such file), INVALID_ARGUMENT (a directory,
// or an empty command), PERMISSION_DENIED, INTERNAL (pipe/spawn failed).
// Errors from Read: UNAVAILABLE for a failed command, DATA_LOSS for an I/O
// error. Read after an error or after Close() is FAILED_PRECONDITION.
//
// Thread safety: one thread at a time per ByteSource.

#ifndef OCLIP_DATA_BYTE_SOURCE_H_
#define OCLIP_DATA_BYTE_SOURCE_H_

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace oclip {

// The prefix that marks a shard spec as a shell command.
inline constexpr absl::string_view kPipePrefix = "pipe:";

class ByteSource {
 public:
  // `spec` is a path, or "pipe:" followed by a shell command.
  static absl::StatusOr<std::unique_ptr<ByteSource>> Open(const std::string& spec);

  virtual ~ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Reads up to `size` bytes into `buffer`. Returns the number read, 0 only at
  // the end of the stream (for a pipe: after the command exited successfully).
  virtual absl::StatusOr<size_t> Read(char* buffer, size_t size) = 0;

  // Releases the file / ends and reaps the command (see above). Returns the
  // status the stream ended with: OK when abandoned or finished well, the
  // command's failure when Read already reported it. Idempotent.
  virtual absl::Status Close() = 0;

  // Whether Read has returned 0 or an error: the stream was consumed to its
  // end (used to tell a truncated archive from a corrupt one).
  virtual bool at_end() const = 0;

  // The pid of a `pipe:` command's shell while it runs, -1 otherwise (for
  // tests and diagnostics).
  virtual pid_t child_pid() const { return -1; }

  // The spec this source was opened with.
  const std::string& spec() const { return spec_; }

 protected:
  explicit ByteSource(std::string spec) : spec_(std::move(spec)) {}

 private:
  std::string spec_;
};

}  // namespace oclip

#endif  // OCLIP_DATA_BYTE_SOURCE_H_
