#include "tests/server/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/download.h"
#include "tests/core/scratch_dir.h"

namespace oclip::testing {

std::vector<std::string> TinyVitServeArgs(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"serve",
                                   "--model",
                                   ReferencePath("tiny-vit.json"),
                                   "--pretrained",
                                   ReferencePath("tiny-vit.safetensors"),
                                   "--tokenizer",
                                   ReferencePath("bpe_simple_vocab_16e6.txt.gz"),
                                   "--host",
                                   "127.0.0.1",
                                   "--port",
                                   "0",
                                   "--metrics-host",
                                   "127.0.0.1",
                                   "--metrics-port",
                                   "0",
                                   "--threads",
                                   "1"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& args) {
  static std::atomic<int> counter{0};
  std::unique_ptr<ServerProcess> process(new ServerProcess());
  process->stderr_path_ = absl::StrCat(ScratchDir(), "/serve-", counter.fetch_add(1), ".stderr");
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  std::vector<std::string> argv_storage = {OCLIP_BINARY};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_storage) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    const int err = open(process->stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) dup2(err, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  process->pid_ = pid;
  process->stdout_ = fdopen(out[0], "r");

  // "oclip serve: listening on 127.0.0.1:PORT (metrics on HOST:PORT | metrics off)"
  absl::StatusOr<std::string> line = process->ReadLine();
  if (!line.ok()) return line.status();
  static const std::regex kListening(
      R"(listening on [^ ]*:(\d+) \((?:metrics on [^ ]*:(\d+)|metrics off)\))");
  std::smatch match;
  if (!std::regex_search(*line, match, kListening)) {
    return absl::InternalError(absl::StrCat("unexpected first line: ", *line));
  }
  process->port_ = std::stoi(match[1].str());
  process->metrics_port_ = match[2].matched ? std::stoi(match[2].str()) : -1;
  return process;
}

absl::StatusOr<std::string> ServerProcess::ReadLine() {
  char buffer[4096];
  if (stdout_ == nullptr || std::fgets(buffer, sizeof(buffer), stdout_) == nullptr) {
    const int code = Wait();
    return absl::InternalError(
        absl::StrCat("oclip serve exited (", code, ") before answering:\n", Stderr()));
  }
  return std::string(buffer);
}

absl::Status ServerProcess::WaitUntilReady() {
  for (;;) {
    absl::StatusOr<std::string> line = ReadLine();
    if (!line.ok()) return line.status();
    if (absl::StrContains(*line, "oclip serve: ready")) return absl::OkStatus();
  }
}

int ServerProcess::Wait() {
  if (pid_ < 0) return -1;
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int ServerProcess::Terminate() {
  if (pid_ < 0) return -1;
  kill(pid_, SIGTERM);
  return Wait();
}

std::string ServerProcess::Stderr() const {
  std::ifstream in(stderr_path_, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ServerProcess::~ServerProcess() {
  if (pid_ >= 0) {
    kill(pid_, SIGKILL);
    Wait();
  }
  if (stdout_ != nullptr) fclose(stdout_);
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  return FetchUrl(absl::StrCat("http://127.0.0.1:", port, path));
}

}  // namespace oclip::testing
