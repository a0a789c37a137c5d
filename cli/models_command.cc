// `oclip models`: the built-in model configs and their pretrained tags.

#include <iostream>

#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "model/config.h"
#include "model/pretrained.h"

namespace oclip::cli {

int RunModels(int argc, char** argv) {
  FlagSet flags("models",
                "Lists the built-in model configs (names accepted by --model), each with the\n"
                "pretrained tags accepted by --pretrained, like open_clip.list_pretrained().");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  for (const std::string& name : ListModelNames()) {
    const std::vector<std::string> tags = ListPretrainedTags(name);
    std::cout << name << (tags.empty() ? "" : "\t") << absl::StrJoin(tags, " ") << "\n";
  }
  return 0;
}

}  // namespace oclip::cli
