#include "core/process_group_launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/status.h"

extern char** environ;

namespace oclip {
namespace {

// The write end of the self-pipe the signal handler wakes the loop with;
// -1 when no launch runs.
std::atomic<int> g_wake_fd{-1};
std::atomic<bool> g_launch_active{false};

void OnSignal(int signo) {
  const int saved_errno = errno;
  const int fd = g_wake_fd.load();
  if (fd >= 0) {
    const unsigned char byte = static_cast<unsigned char>(signo);
    // A full pipe already holds a wake-up; nothing is lost by dropping this.
    [[maybe_unused]] const ssize_t ignored = ::write(fd, &byte, 1);
  }
  errno = saved_errno;
}

constexpr int kHandledSignals[] = {SIGINT, SIGTERM, SIGCHLD};

// Installs OnSignal for SIGINT, SIGTERM and SIGCHLD and a non-blocking,
// close-on-exec self-pipe; restores the previous handlers when destroyed.
class SignalScope {
 public:
  absl::Status Install() {
    if (::pipe2(fds_, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoToStatus(errno, "pipe");
    g_wake_fd.store(fds_[1]);
    struct sigaction action = {};
    action.sa_handler = OnSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    for (size_t i = 0; i < std::size(kHandledSignals); ++i) {
      if (::sigaction(kHandledSignals[i], &action, &previous_[i]) != 0) {
        return ErrnoToStatus(errno, "sigaction");
      }
      installed_[i] = true;
    }
    return absl::OkStatus();
  }

  ~SignalScope() {
    for (size_t i = 0; i < std::size(kHandledSignals); ++i) {
      if (installed_[i]) ::sigaction(kHandledSignals[i], &previous_[i], nullptr);
    }
    g_wake_fd.store(-1);
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }

  int read_fd() const { return fds_[0]; }

  // The signals received since the last call, in order.
  std::vector<int> Drain() {
    std::vector<int> signals;
    unsigned char buffer[64];
    ssize_t n;
    while ((n = ::read(fds_[0], buffer, sizeof(buffer))) > 0) {
      signals.insert(signals.end(), buffer, buffer + n);
    }
    return signals;
  }

 private:
  int fds_[2] = {-1, -1};
  struct sigaction previous_[std::size(kHandledSignals)] = {};
  bool installed_[std::size(kHandledSignals)] = {};
};

struct Rank {
  int rank = 0;
  int local_rank = 0;
  pid_t pid = -1;
  bool running = false;
};

// The caller's environment with torchrun's variables for one rank.
std::vector<std::string> RankEnvironment(const LaunchOptions& options, int local_rank) {
  std::map<std::string, std::string> set = {
      {"RANK", std::to_string(options.node_rank * options.nproc_per_node + local_rank)},
      {"LOCAL_RANK", std::to_string(local_rank)},
      {"WORLD_SIZE", std::to_string(options.nnodes * options.nproc_per_node)},
      {"LOCAL_WORLD_SIZE", std::to_string(options.nproc_per_node)},
      {"GROUP_RANK", std::to_string(options.node_rank)},
      {"MASTER_ADDR", options.master_addr},
      {"MASTER_PORT", std::to_string(options.master_port)},
  };
  if (std::getenv("OMP_NUM_THREADS") == nullptr && options.nproc_per_node > 1) {
    set["OMP_NUM_THREADS"] = "1";
  }
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string variable = *entry;
    if (set.count(variable.substr(0, variable.find('='))) == 0) env.push_back(variable);
  }
  for (const auto& [name, value] : set) env.push_back(name + "=" + value);
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// Forks one rank; in the child, never returns.
absl::StatusOr<pid_t> StartRank(const LaunchOptions& options, int local_rank) {
  std::vector<std::string> argv_strings = options.command;
  std::vector<std::string> env_strings = RankEnvironment(options, local_rank);
  std::vector<char*> argv = Pointers(argv_strings);
  std::vector<char*> envp = Pointers(env_strings);
  const std::string exec_error =
      absl::StrCat("oclip launch: cannot execute '", argv_strings[0], "': ");
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(128 + SIGKILL);  // The launcher is already gone.
    sigset_t unblock;
    sigemptyset(&unblock);
    for (int signo : kHandledSignals) sigaddset(&unblock, signo);
    ::sigprocmask(SIG_UNBLOCK, &unblock, nullptr);
    ::execvpe(argv[0], argv.data(), envp.data());
    const int error = errno;
    [[maybe_unused]] ssize_t ignored = ::write(2, exec_error.data(), exec_error.size());
    const char* reason = std::strerror(error);
    ignored = ::write(2, reason, std::strlen(reason));
    ignored = ::write(2, "\n", 1);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // Also here, so that no signal is sent before the child sets it.
  return pid;
}

void SignalRunning(const std::vector<Rank>& ranks, int signo) {
  for (const Rank& rank : ranks) {
    if (rank.running) ::kill(-rank.pid, signo);
  }
}

std::string SignalName(int signo) {
  const char* name = ::sigabbrev_np(signo);
  return name != nullptr ? absl::StrCat("SIG", name) : absl::StrCat("signal ", signo);
}

absl::Status ValidateOptions(const LaunchOptions& options) {
  if (options.nproc_per_node < 1) return absl::InvalidArgumentError("nproc_per_node must be >= 1");
  if (options.nnodes < 1) return absl::InvalidArgumentError("nnodes must be >= 1");
  if (options.node_rank < 0 || options.node_rank >= options.nnodes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node_rank must be in [0, nnodes = ", options.nnodes, "), got ", options.node_rank));
  }
  if (options.master_port < 1 || options.master_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("master_port must be in 1..65535, got ", options.master_port));
  }
  if (options.master_addr.empty()) return absl::InvalidArgumentError("master_addr is empty");
  if (options.command.empty() || options.command[0].empty()) {
    return absl::InvalidArgumentError("no command to launch");
  }
  return absl::OkStatus();
}

// Clears g_launch_active when the launch ends.
struct ActiveLaunch {
  ~ActiveLaunch() { g_launch_active.store(false); }
};

}  // namespace

absl::StatusOr<LaunchResult> LaunchProcessGroup(const LaunchOptions& options) {
  OCLIP_RETURN_IF_ERROR(ValidateOptions(options));
  if (g_launch_active.exchange(true)) {
    return absl::FailedPreconditionError("another process group launch is running in this process");
  }
  ActiveLaunch active;
  SignalScope signals;
  OCLIP_RETURN_IF_ERROR(signals.Install());

  std::vector<Rank> ranks(options.nproc_per_node);
  for (int local = 0; local < options.nproc_per_node; ++local) {
    Rank& rank = ranks[local];
    rank.local_rank = local;
    rank.rank = options.node_rank * options.nproc_per_node + local;
    absl::StatusOr<pid_t> pid = StartRank(options, local);
    if (!pid.ok()) {
      SignalRunning(ranks, SIGKILL);
      for (Rank& started : ranks) {
        if (started.running) ::waitpid(started.pid, nullptr, 0);
      }
      return pid.status();
    }
    rank.pid = *pid;
    rank.running = true;
  }

  LaunchResult result;
  int live = options.nproc_per_node;
  int interrupted_by = 0;
  bool stopping = false;  // SIGTERM (or the forwarded signal) sent.
  absl::Time kill_at = absl::InfiniteFuture();
  const auto stop = [&](int signo) {
    SignalRunning(ranks, signo);
    stopping = true;
    kill_at = absl::Now() + options.grace_period;
  };
  while (true) {
    for (Rank& rank : ranks) {
      if (!rank.running) continue;
      int status = 0;
      const pid_t done = ::waitpid(rank.pid, &status, WNOHANG);
      if (done == 0 || (done < 0 && errno == EINTR)) continue;
      rank.running = false;
      --live;
      const bool failed = done < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
      if (!failed || result.failed_rank >= 0 || interrupted_by != 0) continue;
      result.failed_rank = rank.rank;
      const std::string who = absl::StrCat("rank ", rank.rank, " (local rank ", rank.local_rank,
                                           ", pid ", rank.pid, ")");
      if (done < 0) {
        result.exit_code = 1;
        result.message = absl::StrCat(who, " could not be waited for: ", std::strerror(errno));
      } else if (WIFSIGNALED(status)) {
        result.exit_code = 128 + WTERMSIG(status);
        result.message = absl::StrCat(who, " was killed by ", SignalName(WTERMSIG(status)));
      } else {
        result.exit_code = WEXITSTATUS(status);
        result.message = absl::StrCat(who, " exited with code ", WEXITSTATUS(status));
      }
      if (live > 0) {
        absl::StrAppend(&result.message, "; stopping the other ", live, " rank(s)");
        if (!stopping) stop(SIGTERM);
      }
    }
    if (live == 0) break;
    const absl::Time now = absl::Now();
    if (stopping && now >= kill_at) {
      SignalRunning(ranks, SIGKILL);
      kill_at = absl::InfiniteFuture();
    }
    int timeout_ms = -1;
    if (kill_at != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(
          std::max<int64_t>(1, absl::ToInt64Milliseconds(kill_at - now + absl::Milliseconds(1))));
    }
    pollfd wake = {signals.read_fd(), POLLIN, 0};
    ::poll(&wake, 1, timeout_ms);
    for (int signo : signals.Drain()) {
      if (signo != SIGINT && signo != SIGTERM) continue;  // SIGCHLD: reap above.
      if (!stopping) {
        interrupted_by = signo;
        stop(signo);
      } else {
        // Interrupted while already stopping: no more grace.
        SignalRunning(ranks, SIGKILL);
        kill_at = absl::InfiniteFuture();
      }
    }
  }
  if (interrupted_by != 0) {
    result.exit_code = 128 + interrupted_by;
    result.failed_rank = -1;
    result.message =
        absl::StrCat("interrupted by ", SignalName(interrupted_by), ": forwarded to every rank");
  }
  return result;
}

}  // namespace oclip
