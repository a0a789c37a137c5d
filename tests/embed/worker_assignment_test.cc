// embed/worker_assignment.h: the worker index/count from flags or from a
// scheduler's environment, in the documented order of precedence.

#include "embed/worker_assignment.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace oclip {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(WorkerAssignmentTest, DefaultsToOneWorker) {
  auto w = ResolveWorkerAssignment(std::nullopt, std::nullopt, FakeEnv({}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->index, 0);
  EXPECT_EQ(w->count, 1);
}

TEST(WorkerAssignmentTest, FlagsWinOverTheEnvironment) {
  auto w = ResolveWorkerAssignment(
      2, 3, FakeEnv({{"JOB_COMPLETION_INDEX", "1"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->index, 2);
  EXPECT_EQ(w->count, 3);
  EXPECT_EQ(w->source, "flags");
}

TEST(WorkerAssignmentTest, KubernetesIndexedJobNeedsACount) {
  auto from_env =
      ResolveWorkerAssignment(std::nullopt, std::nullopt,
                              FakeEnv({{"JOB_COMPLETION_INDEX", "3"}, {"OCLIP_NUM_WORKERS", "4"}}));
  ASSERT_TRUE(from_env.ok()) << from_env.status();
  EXPECT_EQ(from_env->index, 3);
  EXPECT_EQ(from_env->count, 4);
  EXPECT_EQ(from_env->source, "JOB_COMPLETION_INDEX");

  auto from_flag =
      ResolveWorkerAssignment(std::nullopt, 5, FakeEnv({{"JOB_COMPLETION_INDEX", "3"}}));
  ASSERT_TRUE(from_flag.ok()) << from_flag.status();
  EXPECT_EQ(from_flag->count, 5);

  EXPECT_EQ(
      ResolveWorkerAssignment(std::nullopt, std::nullopt, FakeEnv({{"JOB_COMPLETION_INDEX", "3"}}))
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(WorkerAssignmentTest, SlurmArrayThenSlurmTasks) {
  auto array = ResolveWorkerAssignment(std::nullopt, std::nullopt,
                                       FakeEnv({{"SLURM_ARRAY_TASK_ID", "1"},
                                                {"SLURM_ARRAY_TASK_COUNT", "2"},
                                                {"SLURM_PROCID", "0"},
                                                {"SLURM_NTASKS", "1"}}));
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->index, 1);
  EXPECT_EQ(array->count, 2);
  EXPECT_EQ(array->source, "SLURM_ARRAY_TASK_ID");

  auto tasks = ResolveWorkerAssignment(std::nullopt, std::nullopt,
                                       FakeEnv({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "6"}}));
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  EXPECT_EQ(tasks->index, 5);
  EXPECT_EQ(tasks->count, 6);
}

TEST(WorkerAssignmentTest, RejectsBadValues) {
  const auto code = [](std::optional<int> index, std::optional<int> count,
                       std::map<std::string, std::string> env) {
    return ResolveWorkerAssignment(index, count, FakeEnv(std::move(env))).status().code();
  };
  EXPECT_EQ(code(2, 2, {}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(-1, 2, {}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(0, 0, {}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(std::nullopt, std::nullopt, {{"SLURM_PROCID", "x"}}),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(std::nullopt, std::nullopt, {{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "4"}}),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip
