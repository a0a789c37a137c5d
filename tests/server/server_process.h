// A real `oclip serve` process for end-to-end tests (test-only).
//
// Start() runs the binary with the given arguments, its stdout on a pipe
// and its stderr in a file, and reads the "listening on HOST:PORT" line that
// the server prints once its ports are bound; WaitUntilReady() reads on to
// the "ready" line (every model loaded). Both block on the pipe, no sleeps;
// if the process exits first they return its stderr as the error.
//
// Terminate() sends SIGTERM and returns the exit code; the destructor kills a
// process that is still running.

#ifndef OCLIP_TESTS_SERVER_SERVER_PROCESS_H_
#define OCLIP_TESTS_SERVER_SERVER_PROCESS_H_

#include <sys/types.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/core/run_command.h"

namespace oclip::testing {

class ServerProcess {
 public:
  // `args` follow "oclip" (start with "serve").
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::vector<std::string>& args);
  ~ServerProcess();

  absl::Status WaitUntilReady();

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }  // -1 when off.
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return pid_; }

  // SIGTERM, then waits: the exit code (128 + signal if killed by one).
  int Terminate();
  // Waits for the process to exit on its own.
  int Wait();
  std::string Stderr() const;

 private:
  ServerProcess() = default;
  absl::StatusOr<std::string> ReadLine();

  pid_t pid_ = -1;
  FILE* stdout_ = nullptr;
  std::string stderr_path_;
  int port_ = 0;
  int metrics_port_ = -1;
};

// The arguments that serve the tiny ViT fixture on loopback ports chosen by
// the kernel, followed by `extra`.
std::vector<std::string> TinyVitServeArgs(const std::vector<std::string>& extra = {});

// GET http://127.0.0.1:port/path (core's FetchUrl): the body of a 2xx
// answer, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_SERVER_SERVER_PROCESS_H_
