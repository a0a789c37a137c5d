// Running programs from tests (test-only): commands through the shell with
// their output captured, file contents, and the reference fixtures' paths.

#ifndef OCLIP_TESTS_CORE_RUN_COMMAND_H_
#define OCLIP_TESTS_CORE_RUN_COMMAND_H_

#include <sys/wait.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/core/scratch_dir.h"

namespace oclip::testing {

// The whole file, or "" when it cannot be read.
inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// 'text' for the shell, whatever the text holds.
inline std::string ShellQuote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct CommandResult {
  int exit_code;  // -1 when killed by a signal.
  std::string out;
  std::string err;
  std::string command;  // As given to the shell, for failure messages.
};

// Runs `argv` (argv[0] the program) with stdout and stderr captured in
// files of the scratch folder.
inline CommandResult RunCommand(const std::vector<std::string>& argv) {
  static std::atomic<int> counter{0};
  const std::string base = ScratchPath("run-" + std::to_string(counter.fetch_add(1)));
  std::string command;
  for (const std::string& arg : argv) command += (command.empty() ? "" : " ") + ShellQuote(arg);
  const std::string redirected =
      command + " >" + ShellQuote(base + ".out") + " 2>" + ShellQuote(base + ".err");
  const int status = std::system(redirected.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFileOrEmpty(base + ".out"),
          ReadFileOrEmpty(base + ".err"), command};
}

// A file of Python OpenCLIP's reference outputs: under $OCLIP_REFERENCE_DIR,
// or <source>/../shared/reference.
inline std::string ReferencePath(const std::string& relative) {
  const char* env = std::getenv("OCLIP_REFERENCE_DIR");
  return std::string(env != nullptr && env[0] != '\0' ? env : OCLIP_REFERENCE_DIR_DEFAULT) + "/" +
         relative;
}

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_CORE_RUN_COMMAND_H_
