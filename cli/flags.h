// A small command-line flag parser for the `oclip` subcommands: --name VALUE,
// --name=VALUE, boolean --name, and repeatable flags. Flags are declared with
// a help text, so `--help` is generated and unknown flags are rejected.
// Flags live in cli/ only; libraries take Options structs.

#ifndef OCLIP_CLI_FLAGS_H_
#define OCLIP_CLI_FLAGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace oclip::cli {

class FlagSet {
 public:
  FlagSet(std::string command, std::string summary)
      : command_(std::move(command)), summary_(std::move(summary)) {}

  void AddString(const std::string& name, std::string* value, const std::string& help);
  void AddRepeated(const std::string& name, std::vector<std::string>* values,
                   const std::string& help);
  void AddInt(const std::string& name, int64_t* value, const std::string& help);
  void AddBool(const std::string& name, bool* value, const std::string& help);

  // Parses argv[0..argc) (no program or subcommand name). INVALID_ARGUMENT for
  // unknown flags, missing values, bad numbers, and positional arguments.
  // Sets help_requested() for --help / -h.
  absl::Status Parse(int argc, char** argv);
  bool help_requested() const { return help_requested_; }

  // Parse() for a subcommand's main: prints the usage for --help (exit code
  // 0) or the error as one line (exit code 2) and returns the exit code, or
  // nullopt when the command should run.
  std::optional<int> ParseCommandLine(int argc, char** argv);
  std::string Usage() const;

 private:
  enum class Kind { kString, kRepeated, kInt, kBool };
  struct Flag {
    Kind kind;
    void* target;
    std::string help;
  };
  absl::Status Set(const std::string& name, const Flag& flag, const std::string& value);

  std::string command_;
  std::string summary_;
  std::map<std::string, Flag> flags_;
  std::vector<std::string> order_;
  bool help_requested_ = false;
};

}  // namespace oclip::cli

#endif  // OCLIP_CLI_FLAGS_H_
