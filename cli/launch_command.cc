// `oclip launch`: torchrun for oclip. Starts --nproc-per-node local ranks of
// a command with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, ...)
// and fails as a whole when one rank fails (core/process_group_launcher.h):
//   oclip launch --nproc-per-node 2 -- oclip train --train-data ...

#include <cstring>
#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/process_group_launcher.h"

namespace oclip::cli {

int RunLaunch(int argc, char** argv) {
  LaunchOptions options;
  int64_t nproc_per_node = 1, nnodes = 1, node_rank = 0, master_port = options.master_port;
  int64_t grace_seconds = 30;
  FlagSet flags("launch",
                "Runs COMMAND as --nproc-per-node local ranks of a distributed job, with\n"
                "torchrun's environment: RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,\n"
                "GROUP_RANK, MASTER_ADDR, MASTER_PORT (and OMP_NUM_THREADS=1 for several\n"
                "ranks unless set). When a rank fails the others are stopped (SIGTERM, then\n"
                "SIGKILL after the grace period) and launch exits with that rank's code;\n"
                "SIGINT/SIGTERM are forwarded to every rank.\n"
                "\n"
                "  oclip launch --nproc-per-node N [flags] -- COMMAND [ARGS...]");
  flags.AddInt("nproc-per-node", &nproc_per_node, "ranks to start on this node (default 1)");
  flags.AddInt("nnodes", &nnodes, "nodes in the job (default 1)");
  flags.AddInt("node-rank", &node_rank, "this node's index in [0, nnodes) (default 0)");
  flags.AddString("master-addr", &options.master_addr,
                  "address of rank 0's rendezvous store (default 127.0.0.1)");
  flags.AddInt("master-port", &master_port, "port of the rendezvous store (default 29500)");
  flags.AddInt("grace-period", &grace_seconds,
               "seconds between SIGTERM and SIGKILL when stopping ranks (default 30)");
  // Everything after "--" is the command; flags come before it.
  int separator = argc;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      separator = i;
      break;
    }
  }
  if (std::optional<int> exit_code = flags.ParseCommandLine(separator, argv)) return *exit_code;
  for (int i = separator + 1; i < argc; ++i) options.command.emplace_back(argv[i]);
  if (options.command.empty()) {
    std::cerr << "oclip launch: no command to run (oclip launch [flags] -- COMMAND [ARGS...])\n";
    return 2;
  }
  if (grace_seconds < 0) {
    std::cerr << "oclip launch: --grace-period must be >= 0\n";
    return 2;
  }
  options.nproc_per_node = static_cast<int>(nproc_per_node);
  options.nnodes = static_cast<int>(nnodes);
  options.node_rank = static_cast<int>(node_rank);
  options.master_port = static_cast<int>(master_port);
  options.grace_period = absl::Seconds(grace_seconds);
  absl::StatusOr<LaunchResult> result = LaunchProcessGroup(options);
  if (!result.ok()) {
    std::cerr << "oclip launch: " << result.status().message() << "\n";
    return result.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (result->exit_code != 0) {
    std::cerr << "oclip launch: " << result->message << "\n";
    return result->exit_code;
  }
  return 0;
}

}  // namespace oclip::cli
