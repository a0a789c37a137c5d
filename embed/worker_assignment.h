// Which slice of an embedding job this process is: worker `index` of `count`.
// Batch schedulers say it in their own words, so the job reads, in order:
//
//   1. explicit values (the --worker-index / --num-workers flags);
//   2. JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); the count from the
//      explicit value or OCLIP_NUM_WORKERS (Kubernetes does not export the
//      completion count to the pod, so one of the two is required);
//   3. SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (a Slurm job array;
//      array ids are assumed to be 0..count-1 as `--array=0-N` makes them);
//   4. SLURM_PROCID / SLURM_NTASKS (one `srun` step with several tasks);
//   5. otherwise worker 0 of 1 (a lone process does the whole job).
//
// An explicit index wins over every environment variable; an explicit count
// with no index anywhere means worker 0 of that count.
//
// Errors: INVALID_ARGUMENT for a malformed number, an index outside
// [0, count), a count < 1, or JOB_COMPLETION_INDEX without a count.
// Pure function of its arguments (the environment comes in as a callback);
// thread-safe.

#ifndef OCLIP_EMBED_WORKER_ASSIGNMENT_H_
#define OCLIP_EMBED_WORKER_ASSIGNMENT_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace oclip {

struct WorkerAssignment {
  int index = 0;
  int count = 1;
  std::string source;  // Where they came from ("flags", "JOB_COMPLETION_INDEX", ...), for logs.
};

// Looks an environment variable up; nullopt when unset or empty.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;

// The process environment (std::getenv).
EnvLookup ProcessEnv();

absl::StatusOr<WorkerAssignment> ResolveWorkerAssignment(std::optional<int> index,
                                                         std::optional<int> count,
                                                         const EnvLookup& env);

}  // namespace oclip

#endif  // OCLIP_EMBED_WORKER_ASSIGNMENT_H_
