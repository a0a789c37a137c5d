// Starts the local ranks of a data-parallel job the way torchrun does, and
// supervises them as one unit: `oclip launch --nproc-per-node N -- oclip
// train ...`.
//
// Each of the `nproc_per_node` processes runs `command` (argv; argv[0] is
// looked up on PATH) with the caller's environment plus torchrun's:
//   RANK = node_rank * nproc_per_node + LOCAL_RANK, LOCAL_RANK,
//   WORLD_SIZE = nnodes * nproc_per_node, LOCAL_WORLD_SIZE = nproc_per_node,
//   GROUP_RANK = node_rank, MASTER_ADDR, MASTER_PORT,
//   and OMP_NUM_THREADS=1 when it is unset and there are several local ranks
//   (torchrun's rule, so that N ranks do not each start a thread per core).
// Standard input, output and error are inherited (ranks' lines interleave).
//
// The group fails as a whole: when a rank exits non-zero or is killed, the
// other ranks get SIGTERM, then SIGKILL after `grace_period`, and the result
// names the first rank that failed. SIGINT and SIGTERM sent to the launcher
// are forwarded to every rank (a second one kills them at once). Each rank
// runs in its own process group, so that signals reach the processes it
// started too (a shell's children), and dies with the launcher
// (PR_SET_PDEATHSIG).
//
// Thread safety: one launch per process at a time (the signal handlers are
// process-wide; a second concurrent call is FAILED_PRECONDITION). Call it
// from the main thread of a process whose other threads, if any, block
// SIGINT, SIGTERM and SIGCHLD. No LibTorch: this is plain POSIX.

#ifndef OCLIP_CORE_PROCESS_GROUP_LAUNCHER_H_
#define OCLIP_CORE_PROCESS_GROUP_LAUNCHER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace oclip {

struct LaunchOptions {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::vector<std::string> command;  // argv of every rank.
  // SIGTERM to SIGKILL (torch.distributed.elastic waits 30 s).
  absl::Duration grace_period = absl::Seconds(30);
};

struct LaunchResult {
  // 0 when every rank exited 0; else the first failing rank's exit code
  // (128 + signal when it was killed), or 128 + signal when the launcher was
  // interrupted.
  int exit_code = 0;
  int failed_rank = -1;  // Global rank of the first rank that failed; -1 if none.
  std::string message;   // Empty on success; otherwise what happened, one line.
};

// Runs the ranks to completion. INVALID_ARGUMENT for bad options (sizes < 1,
// node_rank outside [0, nnodes), port outside 1..65535, empty command);
// INTERNAL/RESOURCE_EXHAUSTED when processes cannot be started (ranks
// already started are then killed). A rank that fails, including a command
// that cannot be executed (exit code 127), is a LaunchResult, not an error.
absl::StatusOr<LaunchResult> LaunchProcessGroup(const LaunchOptions& options);

}  // namespace oclip

#endif  // OCLIP_CORE_PROCESS_GROUP_LAUNCHER_H_
