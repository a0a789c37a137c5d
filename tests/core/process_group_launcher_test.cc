#include "core/process_group_launcher.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"

namespace oclip {
namespace {

using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ScratchPath;

// Unsets an environment variable for the lifetime of the object.
class UnsetEnv {
 public:
  explicit UnsetEnv(const char* name) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    unsetenv(name);
  }
  ~UnsetEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

LaunchOptions Shell(int nproc, const std::string& script) {
  LaunchOptions options;
  options.nproc_per_node = nproc;
  options.command = {"/bin/sh", "-c", script};
  options.grace_period = absl::Seconds(10);
  return options;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ScratchPath(name);
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  return dir;
}

TEST(ProcessGroupLauncherTest, RanksSeeTorchrunsEnvironment) {
  const std::string dir = FreshDir("environment");
  UnsetEnv omp("OMP_NUM_THREADS");
  setenv("RANK", "99", 1);  // The launcher's own value must not leak through.
  LaunchOptions options =
      Shell(3,
            "echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $GROUP_RANK $MASTER_ADDR "
            "$MASTER_PORT $OMP_NUM_THREADS\" > " +
                dir + "/rank_$LOCAL_RANK");
  options.nnodes = 2;
  options.node_rank = 1;
  options.master_addr = "10.1.2.3";
  options.master_port = 1234;
  auto result = LaunchProcessGroup(options);
  unsetenv("RANK");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0) << result->message;
  EXPECT_EQ(result->failed_rank, -1);
  EXPECT_EQ(result->message, "");
  for (int local = 0; local < 3; ++local) {
    EXPECT_EQ(ReadFileOrEmpty(absl::StrCat(dir, "/rank_", local)),
              absl::StrCat(3 + local, " ", local, " 6 3 1 10.1.2.3 1234 1\n"));
  }
}

TEST(ProcessGroupLauncherTest, KeepsASetThreadCountAndSetsNoneForOneRank) {
  const std::string dir = FreshDir("omp");
  {
    UnsetEnv omp("OMP_NUM_THREADS");
    auto one = LaunchProcessGroup(Shell(1, "echo \"[$OMP_NUM_THREADS]\" > " + dir + "/one"));
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_EQ(ReadFileOrEmpty(dir + "/one"), "[]\n");
  }
  UnsetEnv restore("OMP_NUM_THREADS");
  setenv("OMP_NUM_THREADS", "4", 1);
  auto two =
      LaunchProcessGroup(Shell(2, "echo \"[$OMP_NUM_THREADS]\" > " + dir + "/two_$LOCAL_RANK"));
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(ReadFileOrEmpty(dir + "/two_0"), "[4]\n");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/two_1"), "[4]\n");
}

TEST(ProcessGroupLauncherTest, OneFailingRankStopsTheOthers) {
  // The siblings would sleep for ten minutes; SIGTERM ends them.
  const absl::Time start = absl::Now();
  auto result =
      LaunchProcessGroup(Shell(3, "if [ \"$LOCAL_RANK\" = 1 ]; then exit 3; fi; exec sleep 600"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_EQ(result->failed_rank, 1);
  EXPECT_TRUE(absl::StrContains(result->message, "rank 1 (local rank 1")) << result->message;
  EXPECT_TRUE(absl::StrContains(result->message, "exited with code 3")) << result->message;
  EXPECT_LT(absl::Now() - start, absl::Minutes(5));
}

// A sibling that ignores SIGTERM is killed when the grace period ends. The
// failing rank waits (on a FIFO) until the sibling has set its trap.
TEST(ProcessGroupLauncherTest, SiblingIgnoringSigtermIsKilledAfterTheGracePeriod) {
  const std::string dir = FreshDir("grace");
  const std::string fifo = dir + "/ready";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  LaunchOptions options =
      Shell(2, "if [ \"$LOCAL_RANK\" = 0 ]; then trap '' TERM; echo up > " + fifo +
                   "; exec sleep 600; else read line < " + fifo + "; exit 5; fi");
  options.grace_period = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  auto result = LaunchProcessGroup(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 5);
  EXPECT_EQ(result->failed_rank, 1);
  EXPECT_LT(absl::Now() - start, absl::Minutes(5));
}

TEST(ProcessGroupLauncherTest, ReportsARankKilledByASignal) {
  auto result = LaunchProcessGroup(Shell(2, "if [ \"$RANK\" = 0 ]; then kill -KILL $$; fi"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 128 + SIGKILL);
  EXPECT_EQ(result->failed_rank, 0);
  EXPECT_TRUE(absl::StrContains(result->message, "killed by SIGKILL")) << result->message;
}

TEST(ProcessGroupLauncherTest, ACommandThatCannotRunFails) {
  LaunchOptions options;
  options.nproc_per_node = 2;
  options.command = {ScratchPath("no_such_program")};
  auto result = LaunchProcessGroup(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 127);
  EXPECT_GE(result->failed_rank, 0);
}

// SIGTERM to the launcher reaches every rank (their traps record it) and the
// launch ends with 128 + SIGTERM. Each rank signals on its own FIFO once its
// trap is set and its sleep started (so that the group's SIGTERM ends the
// sleep too); only then is the launcher signalled.
TEST(ProcessGroupLauncherTest, ForwardsSigtermToEveryRank) {
  const std::string dir = FreshDir("forward");
  for (int local = 0; local < 2; ++local) {
    ASSERT_EQ(::mkfifo(absl::StrCat(dir, "/ready_", local).c_str(), 0600), 0);
  }
  // Short foreground sleeps, not one long background one: a background child forked just
  // before the signal can still carry the shell's handler, swallow SIGTERM, exec and outlive
  // the test holding its output open.
  const LaunchOptions options =
      Shell(2, "trap 'echo $RANK > " + dir + "/term_$RANK; exit 0' TERM; echo up > " + dir +
                   "/ready_$LOCAL_RANK; while :; do sleep 0.05; done");
  std::thread signaller([&] {
    for (int local = 0; local < 2; ++local) {
      std::ifstream ready(absl::StrCat(dir, "/ready_", local));
      std::string line;
      std::getline(ready, line);
    }
    ::kill(::getpid(), SIGTERM);
  });
  auto result = LaunchProcessGroup(options);
  signaller.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 128 + SIGTERM);
  EXPECT_EQ(result->failed_rank, -1);
  EXPECT_TRUE(absl::StrContains(result->message, "SIGTERM")) << result->message;
  EXPECT_EQ(ReadFileOrEmpty(dir + "/term_0"), "0\n");
  EXPECT_EQ(ReadFileOrEmpty(dir + "/term_1"), "1\n");
}

TEST(ProcessGroupLauncherTest, RejectsBadOptions) {
  const auto code = [](LaunchOptions options) {
    return LaunchProcessGroup(options).status().code();
  };
  LaunchOptions good = Shell(1, "true");
  LaunchOptions bad = good;
  bad.nproc_per_node = 0;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad.nnodes = 2;
  bad.node_rank = 2;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad.master_port = 70000;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad.command.clear();
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(good), absl::StatusCode::kOk);
}

}  // namespace
}  // namespace oclip
