#include "data/byte_source.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

extern char** environ;

#include "core/status.h"

namespace oclip {
namespace {

absl::Status ErrnoError(int error, absl::string_view what, absl::string_view name) {
  return ErrnoToStatus(error, absl::StrCat(what, " ", name));
}

class FileByteSource : public ByteSource {
 public:
  FileByteSource(std::string path, int fd) : ByteSource(std::move(path)), fd_(fd) {}
  ~FileByteSource() override { Close().IgnoreError(); }

  absl::StatusOr<size_t> Read(char* buffer, size_t size) override {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(spec(), " is closed"));
    while (true) {
      const ssize_t n = ::read(fd_, buffer, size);
      if (n >= 0) {
        if (n == 0) at_end_ = true;
        return static_cast<size_t>(n);
      }
      if (errno == EINTR) continue;
      at_end_ = true;
      return absl::DataLossError(absl::StrCat("cannot read ", spec(), ": ", std::strerror(errno)));
    }
  }

  absl::Status Close() override {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return absl::OkStatus();
  }

  bool at_end() const override { return at_end_; }

 private:
  int fd_;
  bool at_end_ = false;
};

class PipeByteSource : public ByteSource {
 public:
  PipeByteSource(std::string spec, std::string command, pid_t pid, int fd)
      : ByteSource(std::move(spec)), command_(std::move(command)), pid_(pid), fd_(fd) {}
  ~PipeByteSource() override { Close().IgnoreError(); }

  absl::StatusOr<size_t> Read(char* buffer, size_t size) override {
    if (!end_status_.ok()) return end_status_;
    if (at_end_) return size_t{0};
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(spec(), " is closed"));
    while (true) {
      const ssize_t n = ::read(fd_, buffer, size);
      if (n > 0) return static_cast<size_t>(n);
      if (n < 0 && errno == EINTR) continue;
      at_end_ = true;
      if (n < 0) {
        end_status_ = absl::DataLossError(absl::StrCat("cannot read the output of pipe command `",
                                                       command_, "`: ", std::strerror(errno)));
        return end_status_;
      }
      // End of output: the command's exit status decides whether the bytes
      // were all there.
      ::close(fd_);
      fd_ = -1;
      end_status_ = Reap();
      if (!end_status_.ok()) return end_status_;
      return size_t{0};
    }
  }

  absl::Status Close() override {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (pid_ > 0) {
      // Abandoned before the end: the command (and whatever it started, e.g.
      // both halves of `curl | zcat`) is of no further use.
      ::kill(-pid_, SIGKILL);
      Reap().IgnoreError();
    }
    return end_status_;
  }

  bool at_end() const override { return at_end_; }
  pid_t child_pid() const override { return pid_; }

 private:
  // Waits for the shell; OK iff it exited with status 0.
  absl::Status Reap() {
    int status = 0;
    pid_t got;
    do {
      got = ::waitpid(pid_, &status, 0);
    } while (got < 0 && errno == EINTR);
    pid_ = -1;
    if (got < 0) {
      return absl::InternalError(
          absl::StrCat("waitpid for pipe command `", command_, "`: ", std::strerror(errno)));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
    if (WIFEXITED(status)) {
      return absl::UnavailableError(
          absl::StrCat("pipe command `", command_, "` exited with status ", WEXITSTATUS(status)));
    }
    return absl::UnavailableError(
        absl::StrCat("pipe command `", command_, "` was killed by signal ", WTERMSIG(status)));
  }

  const std::string command_;
  pid_t pid_;
  int fd_;
  bool at_end_ = false;
  absl::Status end_status_;
};

absl::StatusOr<std::unique_ptr<ByteSource>> OpenFile(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoError(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a shard"));
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return std::unique_ptr<ByteSource>(new FileByteSource(path, fd));
}

// RAII for the posix_spawn attribute objects.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

absl::StatusOr<std::unique_ptr<ByteSource>> OpenPipe(const std::string& spec, std::string command) {
  if (command.find_first_not_of(" \t\n") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("empty command in \"", spec, "\""));
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe for", spec);

  // posix_spawn rather than fork: safe in a multi-threaded process and cheap
  // with a large address space. Both pipe ends are close-on-exec; dup2 onto
  // fd 1 gives the child a copy without the flag.
  SpawnSetup setup;
  posix_spawn_file_actions_addopen(&setup.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&setup.actions, fds[1], STDOUT_FILENO);
  // Own process group, so that Close() can kill a whole pipeline; signals at
  // their defaults and none blocked, whatever the job set for itself (a
  // server ignoring SIGPIPE must not leave `curl` writing into a closed pipe).
  sigset_t defaults, empty;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) sigaddset(&defaults, sig);
  sigemptyset(&empty);
  posix_spawnattr_setflags(&setup.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&setup.attr, 0);
  posix_spawnattr_setsigdefault(&setup.attr, &defaults);
  posix_spawnattr_setsigmask(&setup.attr, &empty);

  std::string sh = "sh", dash_c = "-c";
  char* argv[] = {sh.data(), dash_c.data(), command.data(), nullptr};
  pid_t pid = -1;
  const int error = ::posix_spawn(&pid, "/bin/sh", &setup.actions, &setup.attr, argv, environ);
  ::close(fds[1]);
  if (error != 0) {
    ::close(fds[0]);
    return absl::InternalError(
        absl::StrCat("cannot start pipe command `", command, "`: ", std::strerror(error)));
  }
  return std::unique_ptr<ByteSource>(new PipeByteSource(spec, std::move(command), pid, fds[0]));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ByteSource>> ByteSource::Open(const std::string& spec) {
  absl::string_view command = spec;
  if (absl::ConsumePrefix(&command, kPipePrefix)) return OpenPipe(spec, std::string(command));
  if (spec.empty()) return absl::InvalidArgumentError("empty shard path");
  return OpenFile(spec);
}

}  // namespace oclip
