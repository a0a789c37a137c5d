#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

#if defined(__linux__)
#include <pthread.h>
#endif

namespace oclip {
namespace {

// Bounds a wait that should end at once, so that a broken pool fails the test
// instead of hanging it. Never reached when the code is right.
constexpr absl::Duration kSafetyTimeout = absl::Seconds(30);

TEST(ThreadPoolTest, RunsEveryTaskExactlyOnceUnderConcurrentScheduling) {
  constexpr int kProducers = 4;
  constexpr int kTasksPerProducer = 5000;
  constexpr int kTasks = kProducers * kTasksPerProducer;
  std::vector<std::atomic<int>> runs(kTasks);
  for (auto& r : runs) r.store(0);
  absl::BlockingCounter done(kTasks);
  {
    ThreadPool pool(4);
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; ++p) {
      producers.emplace_back([&, p] {
        for (int i = 0; i < kTasksPerProducer; ++i) {
          const int id = p * kTasksPerProducer + i;
          pool.Schedule([&runs, &done, id] {
            runs[id].fetch_add(1);
            done.DecrementCount();
          });
        }
      });
    }
    for (std::thread& t : producers) t.join();
    done.Wait();
  }
  for (int id = 0; id < kTasks; ++id) {
    ASSERT_EQ(runs[id].load(), 1) << "task " << id;
  }
}

TEST(ThreadPoolTest, DestructorRunsQueuedTasks) {
  constexpr int kQueued = 200;
  std::atomic<int> ran{0};
  absl::Notification started;
  absl::Notification release;
  auto pool = std::make_unique<ThreadPool>(1);
  pool->Schedule([&] {
    started.Notify();
    release.WaitForNotification();
  });
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(kSafetyTimeout));
  for (int i = 0; i < kQueued; ++i) pool->Schedule([&] { ran.fetch_add(1); });
  // The only thread is blocked, so all of them are still queued.
  EXPECT_EQ(pool->pending(), kQueued);
  release.Notify();
  pool.reset();  // Most of the queue is still there when the destructor starts.
  EXPECT_EQ(ran.load(), kQueued);
}

TEST(ThreadPoolTest, TasksScheduledByTasksDuringDestructionRun) {
  constexpr int kRoots = 500;
  constexpr int kDepth = 3;  // each root schedules a child, which schedules a grandchild
  std::atomic<int> ran{0};
  auto pool = std::make_unique<ThreadPool>(2);
  // unique_ptr::reset() nulls `pool` before the destructor runs; tasks use this.
  ThreadPool* const raw_pool = pool.get();
  // A chain of tasks, each scheduling the next from inside the pool.
  std::function<void(int)> chain = [&](int remaining) {
    ran.fetch_add(1);
    if (remaining > 1) raw_pool->Schedule([&chain, remaining] { chain(remaining - 1); });
  };
  for (int i = 0; i < kRoots; ++i) pool->Schedule([&chain] { chain(kDepth); });
  // Destroyed at once: most chains are extended while the destructor drains.
  pool.reset();
  EXPECT_EQ(ran.load(), kRoots * kDepth);
}

TEST(ThreadPoolTest, NumThreadsDefaultsToHardwareConcurrency) {
  const int expected = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  EXPECT_EQ(ThreadPool(0).num_threads(), expected);
  EXPECT_EQ(ThreadPool(-1).num_threads(), expected);
  EXPECT_EQ(ThreadPool(3).num_threads(), 3);
}

TEST(ThreadPoolTest, RunsNumThreadsTasksAtOnce) {
  // Each task waits until all of them have started: only possible if the pool
  // really has num_threads() threads.
  constexpr int kThreads = 6;
  // Declared before the pool: tasks may still be returning from them until
  // the pool's destructor has joined.
  absl::Notification release;
  std::atomic<int> arrived{0};
  absl::Notification everyone_here;
  ThreadPool pool(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    pool.Schedule([&] {
      if (arrived.fetch_add(1) + 1 == kThreads) everyone_here.Notify();
      release.WaitForNotification();
    });
  }
  const bool concurrent = everyone_here.WaitForNotificationWithTimeout(kSafetyTimeout);
  release.Notify();
  EXPECT_TRUE(concurrent) << arrived.load() << " of " << kThreads << " tasks ran at once";
  EXPECT_EQ(pool.pending(), 0);
}

TEST(ThreadPoolTest, IgnoresEmptyTask) {
  ThreadPool pool(1);
  pool.Schedule(nullptr);
  EXPECT_EQ(pool.pending(), 0);
}

#if defined(__linux__)
TEST(ThreadPoolTest, NamesItsThreads) {
  char name[16] = {};
  absl::Notification done;
  ThreadPool pool(1);  // joined before `done` goes away
  pool.Schedule([&] {
    pthread_getname_np(pthread_self(), name, sizeof(name));
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kSafetyTimeout));
  EXPECT_STREQ(name, "oclip-pool");
}
#endif

}  // namespace
}  // namespace oclip
