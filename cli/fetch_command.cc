// `oclip fetch MODEL TAG`: downloads a released checkpoint and its tokenizer
// into the cache ($OCLIP_CACHE, default ~/.cache/oclip).

#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/status.h"
#include "model/config.h"
#include "model/pretrained.h"

namespace oclip::cli {
namespace {

absl::Status Fetch(const std::string& model, const std::string& tag) {
  OCLIP_ASSIGN_OR_RETURN(ModelConfig config, GetBuiltinModelConfig(model));
  OCLIP_ASSIGN_OR_RETURN(std::string checkpoint, FetchPretrained(config.name, tag));
  std::cout << "checkpoint " << checkpoint << "\n";
  OCLIP_ASSIGN_OR_RETURN(std::string tokenizer, FetchTokenizer(config.text.hf_tokenizer_name));
  std::cout << "tokenizer  " << tokenizer << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunFetch(int argc, char** argv) {
  FlagSet flags("fetch MODEL TAG",
                "Downloads the checkpoint of MODEL with pretrained TAG (see `oclip models`)\n"
                "and its tokenizer into the cache ($OCLIP_CACHE, default ~/.cache/oclip),\n"
                "resuming interrupted downloads and verifying checksums where known.\n"
                "$OCLIP_HF_ENDPOINT and $OCLIP_URL_MIRROR select mirrors.");
  // Positional arguments first, flags (only --help) after.
  int positional = 0;
  while (positional < argc && argv[positional][0] != '-') ++positional;
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc - positional, argv + positional)) {
    return *exit_code;
  }
  if (positional != 2) {
    std::cerr << "oclip fetch: expected MODEL TAG (see oclip fetch --help)\n";
    return 2;
  }
  if (absl::Status status = Fetch(argv[0], argv[1]); !status.ok()) {
    std::cerr << "oclip fetch: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
