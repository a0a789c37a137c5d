// `oclip models`: the built-in model configs.

#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "model/config.h"

namespace oclip::cli {

int RunModels(int argc, char** argv) {
  FlagSet flags("models", "Lists the built-in model configs (names accepted by --model).");
  if (absl::Status status = flags.Parse(argc, argv); !status.ok()) {
    std::cerr << "oclip models: " << status.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  for (const std::string& name : ListModelNames()) std::cout << name << "\n";
  return 0;
}

}  // namespace oclip::cli
