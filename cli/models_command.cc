// `oclip models`: the built-in model configs.

#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "model/config.h"

namespace oclip::cli {

int RunModels(int argc, char** argv) {
  FlagSet flags("models", "Lists the built-in model configs (names accepted by --model).");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  for (const std::string& name : ListModelNames()) std::cout << name << "\n";
  return 0;
}

}  // namespace oclip::cli
