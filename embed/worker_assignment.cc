#include "embed/worker_assignment.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace oclip {
namespace {

absl::StatusOr<std::optional<int>> EnvInt(const EnvLookup& env, const char* name) {
  std::optional<std::string> text = env(name);
  if (!text.has_value()) return std::optional<int>();
  int value = 0;
  if (!absl::SimpleAtoi(*text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, "=\"", *text, "\" is not an integer"));
  }
  return std::optional<int>(value);
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr || value[0] == '\0') return std::nullopt;
    return std::string(value);
  };
}

absl::StatusOr<WorkerAssignment> ResolveWorkerAssignment(std::optional<int> index,
                                                         std::optional<int> count,
                                                         const EnvLookup& env) {
  WorkerAssignment out;
  if (index.has_value()) {
    out.index = *index;
    out.count = count.value_or(1);
    out.source = "flags";
  } else {
    OCLIP_ASSIGN_OR_RETURN(std::optional<int> k8s_index, EnvInt(env, "JOB_COMPLETION_INDEX"));
    OCLIP_ASSIGN_OR_RETURN(std::optional<int> array_id, EnvInt(env, "SLURM_ARRAY_TASK_ID"));
    OCLIP_ASSIGN_OR_RETURN(std::optional<int> procid, EnvInt(env, "SLURM_PROCID"));
    if (k8s_index.has_value()) {
      OCLIP_ASSIGN_OR_RETURN(std::optional<int> env_count, EnvInt(env, "OCLIP_NUM_WORKERS"));
      if (!count.has_value() && !env_count.has_value()) {
        return absl::InvalidArgumentError(
            "JOB_COMPLETION_INDEX is set but the worker count is not: pass --num-workers or "
            "set OCLIP_NUM_WORKERS to the Job's completions");
      }
      out.index = *k8s_index;
      out.count = count.has_value() ? *count : *env_count;
      out.source = "JOB_COMPLETION_INDEX";
    } else if (array_id.has_value()) {
      OCLIP_ASSIGN_OR_RETURN(std::optional<int> env_count, EnvInt(env, "SLURM_ARRAY_TASK_COUNT"));
      out.index = *array_id;
      out.count = count.has_value() ? *count : env_count.value_or(1);
      out.source = "SLURM_ARRAY_TASK_ID";
    } else if (procid.has_value()) {
      OCLIP_ASSIGN_OR_RETURN(std::optional<int> env_count, EnvInt(env, "SLURM_NTASKS"));
      out.index = *procid;
      out.count = count.has_value() ? *count : env_count.value_or(1);
      out.source = "SLURM_PROCID";
    } else {
      out.index = 0;
      out.count = count.value_or(1);
      out.source = count.has_value() ? "flags" : "default";
    }
  }
  if (out.count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker count ", out.count, " (from ", out.source, ") must be >= 1"));
  }
  if (out.index < 0 || out.index >= out.count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker index ", out.index, " (from ", out.source, ") is outside [0, ", out.count, ")"));
  }
  return out;
}

}  // namespace oclip
