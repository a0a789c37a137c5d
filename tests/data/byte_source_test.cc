#include "data/byte_source.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cerrno>
#include <string>

#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/data/test_shards.h"

namespace oclip {
namespace {

using ::oclip::testing::ReadFileOrEmpty;
using ::oclip::testing::ScratchPath;
using ::oclip::testing::ShellQuote;

// Everything until the end (or the first error).
absl::StatusOr<std::string> ReadToEnd(ByteSource& source, size_t chunk = 1000) {
  std::string out, buffer(chunk, '\0');
  while (true) {
    absl::StatusOr<size_t> n = source.Read(buffer.data(), buffer.size());
    if (!n.ok()) return n.status();
    if (*n == 0) return out;
    out.append(buffer.data(), *n);
  }
}

// True when `pid` is no child of ours any more (reaped: no zombie left).
bool Reaped(pid_t pid) {
  int status;
  return waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD;
}

TEST(ByteSourceTest, ReadsAFileInChunks) {
  const std::string path = testing::FixtureImagePath("landscape.jpg");
  auto source = ByteSource::Open(path);
  ASSERT_TRUE(source.ok()) << source.status();
  absl::StatusOr<std::string> bytes = ReadToEnd(**source, 777);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, ReadFileOrEmpty(path));
  EXPECT_TRUE((*source)->at_end());
  EXPECT_EQ((*source)->spec(), path);
}

TEST(ByteSourceTest, OpenErrors) {
  EXPECT_EQ(ByteSource::Open(ScratchPath("no-such-file")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ByteSource::Open(testing::ScratchDir()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ByteSource::Open("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ByteSource::Open("pipe:  ").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ByteSourceTest, PipeGivesTheCommandsOutputAndReapsIt) {
  const std::string path = testing::FixtureImagePath("wide.webp");
  auto source = ByteSource::Open("pipe:cat " + ShellQuote(path));
  ASSERT_TRUE(source.ok()) << source.status();
  const pid_t pid = (*source)->child_pid();
  ASSERT_GT(pid, 0);
  absl::StatusOr<std::string> bytes = ReadToEnd(**source);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, ReadFileOrEmpty(path));
  EXPECT_TRUE(Reaped(pid));
  EXPECT_TRUE((*source)->Close().ok());
}

TEST(ByteSourceTest, PipeStdinIsEmpty) {
  // `cat` with no file reads stdin: /dev/null, so it ends at once.
  auto source = ByteSource::Open("pipe:cat");
  ASSERT_TRUE(source.ok());
  absl::StatusOr<std::string> bytes = ReadToEnd(**source);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, "");
}

TEST(ByteSourceTest, FailingCommandIsAnErrorNamingCommandAndStatus) {
  for (const std::string command : {"false", "echo partial; exit 3"}) {
    auto source = ByteSource::Open("pipe:" + command);
    ASSERT_TRUE(source.ok()) << source.status();
    const pid_t pid = (*source)->child_pid();
    absl::StatusOr<std::string> bytes = ReadToEnd(**source);
    ASSERT_FALSE(bytes.ok()) << command;
    EXPECT_EQ(bytes.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(bytes.status().message().find("`" + command + "`"), std::string::npos)
        << bytes.status();
    const std::string exit_code = command == "false" ? "1" : "3";
    EXPECT_NE(bytes.status().message().find("status " + exit_code), std::string::npos)
        << bytes.status();
    EXPECT_TRUE(Reaped(pid));
    // The failure sticks: reading again and closing report it too.
    EXPECT_EQ((*source)->Read(nullptr, 0).status(), bytes.status());
    EXPECT_EQ((*source)->Close(), bytes.status());
  }
}

TEST(ByteSourceTest, CommandKilledBySignalIsAnError) {
  auto source = ByteSource::Open("pipe:kill -9 $$");
  ASSERT_TRUE(source.ok());
  absl::StatusOr<std::string> bytes = ReadToEnd(**source);
  ASSERT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status().message().find("signal 9"), std::string::npos) << bytes.status();
}

TEST(ByteSourceTest, AbandonedPipeIsKilledAndReaped) {
  // `yes` never ends on its own; a pipeline puts two processes in the group.
  for (const char* command : {"pipe:yes", "pipe:yes | cat"}) {
    auto source = ByteSource::Open(command);
    ASSERT_TRUE(source.ok());
    const pid_t pid = (*source)->child_pid();
    char buffer[64];
    ASSERT_TRUE((*source)->Read(buffer, sizeof(buffer)).ok());
    EXPECT_TRUE((*source)->Close().ok()) << "abandoning is not an error";
    EXPECT_TRUE(Reaped(pid)) << command;
    EXPECT_EQ((*source)->child_pid(), -1);
    EXPECT_EQ((*source)->Read(buffer, sizeof(buffer)).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

TEST(ByteSourceTest, DestructorReapsAnUnreadCommand) {
  pid_t pid;
  {
    auto source = ByteSource::Open("pipe:yes");
    ASSERT_TRUE(source.ok());
    pid = (*source)->child_pid();
  }
  EXPECT_TRUE(Reaped(pid));
}

}  // namespace
}  // namespace oclip
