#include "server/batch_scheduler.h"

#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace oclip {
namespace {

using Scheduler = BatchScheduler<int>;
using Batch = Scheduler::Batch;

// Bounds waits that should end at once, so that a scheduler that waits when it
// should not fails the test instead of hanging it.
constexpr absl::Duration kSafetyTimeout = absl::Seconds(30);
// Long enough that no test ever reaches it.
constexpr absl::Duration kForever = absl::Hours(1);

BatchSchedulerOptions Options(int max_batch_size, absl::Duration max_queue_delay,
                              int queue_capacity = 1024, int num_lanes = 1) {
  BatchSchedulerOptions options;
  options.max_batch_size = max_batch_size;
  options.max_queue_delay = max_queue_delay;
  options.queue_capacity = queue_capacity;
  options.num_lanes = num_lanes;
  return options;
}

// NextBatch() on another thread, bounded by kSafetyTimeout. On timeout it
// records a failure and closes the scheduler so that the thread can be joined.
bool NextBatchOrFail(Scheduler& scheduler, Batch* batch) {
  bool result = false;
  absl::Notification done;
  std::thread worker([&] {
    result = scheduler.NextBatch(batch);
    done.Notify();
  });
  const bool returned = done.WaitForNotificationWithTimeout(kSafetyTimeout);
  if (!returned) {
    ADD_FAILURE() << "NextBatch() did not return within " << kSafetyTimeout;
    scheduler.Close();
  }
  worker.join();
  return returned && result;
}

TEST(BatchSchedulerTest, FullBatchIsReleasedWithoutWaitingForTheDelay) {
  Scheduler scheduler(Options(/*max_batch_size=*/4, kForever));
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3}).ok());
  ASSERT_TRUE(scheduler.Enqueue(0, {4, 5}).ok());
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(batch.lane, 0);
  EXPECT_TRUE(batch.dropped.empty());
  EXPECT_EQ(scheduler.size(), 1);  // 5 waits for companions or its delay
}

TEST(BatchSchedulerTest, LoneItemIsReleasedAfterTheDelay) {
  constexpr absl::Duration kDelay = absl::Milliseconds(20);
  Scheduler scheduler(Options(/*max_batch_size=*/32, kDelay));
  const absl::Time wall_before = absl::Now();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(scheduler.Enqueue(0, {7}).ok());
  const absl::Time wall_after = absl::Now();
  Batch batch;
  // Returning at all shows it did not wait for 32 items.
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  const absl::Duration waited = absl::FromChrono(std::chrono::steady_clock::now() - start);
  EXPECT_GE(waited, kDelay);
  EXPECT_EQ(batch.items, (std::vector<int>{7}));
  ASSERT_EQ(batch.enqueue_times.size(), 1u);
  EXPECT_GE(batch.enqueue_times[0], wall_before);
  EXPECT_LE(batch.enqueue_times[0], wall_after);
}

TEST(BatchSchedulerTest, ZeroDelayRunsWhatIsThere) {
  Scheduler scheduler(Options(/*max_batch_size=*/32, absl::ZeroDuration()));
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3}).ok());
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{1, 2, 3}));
}

TEST(BatchSchedulerTest, BatchesAreFifoAndCappedAtMaxBatchSize) {
  Scheduler scheduler(Options(/*max_batch_size=*/4, absl::ZeroDuration()));
  ASSERT_TRUE(scheduler.Enqueue(0, {0, 1, 2}).ok());
  ASSERT_TRUE(scheduler.Enqueue(0, {3, 4, 5, 6, 7, 8}).ok());
  ASSERT_TRUE(scheduler.Enqueue(0, {9}).ok());
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{0, 1, 2, 3}));
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{4, 5, 6, 7}));
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{8, 9}));
  EXPECT_EQ(batch.enqueue_times.size(), batch.items.size());
  EXPECT_LE(batch.enqueue_times[0], batch.enqueue_times[1]);
  EXPECT_EQ(scheduler.size(), 0);
}

TEST(BatchSchedulerTest, CapacityIsAllOrNothingOverAllLanes) {
  Scheduler scheduler(Options(/*max_batch_size=*/100, kForever, /*queue_capacity=*/10,
                              /*num_lanes=*/2));
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3, 4, 5, 6, 7}).ok());
  const absl::Status full = scheduler.Enqueue(1, {8, 9, 10, 11});
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(full.message(), "queue full: 7 queued, capacity 10");
  EXPECT_EQ(scheduler.size(), 7);  // none of the four went in
  ASSERT_TRUE(scheduler.Enqueue(1, {8, 9, 10}).ok());
  EXPECT_EQ(scheduler.size(), 10);
  EXPECT_EQ(scheduler.Enqueue(0, {11}).code(), absl::StatusCode::kResourceExhausted);

  // Taking a batch frees its places.
  scheduler.Close();
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(scheduler.size(), 3);
}

TEST(BatchSchedulerTest, TakingABatchFreesCapacity) {
  Scheduler scheduler(Options(/*max_batch_size=*/4, kForever, /*queue_capacity=*/4));
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3, 4}).ok());
  EXPECT_EQ(scheduler.Enqueue(0, {5}).code(), absl::StatusCode::kResourceExhausted);
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_TRUE(scheduler.Enqueue(0, {5, 6, 7, 8}).ok());
}

TEST(BatchSchedulerTest, RejectsRequestsThatCanNeverFitAndBadLanes) {
  Scheduler scheduler(Options(/*max_batch_size=*/4, kForever, /*queue_capacity=*/3,
                              /*num_lanes=*/2));
  EXPECT_EQ(scheduler.Enqueue(0, {1, 2, 3, 4}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.Enqueue(-1, {1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.Enqueue(2, {1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.size(), 0);
  EXPECT_TRUE(scheduler.Enqueue(1, {}).ok());
  EXPECT_EQ(scheduler.size(), 0);
}

TEST(BatchSchedulerTest, LanesNeverMixAndTheOldestReadyLaneWins) {
  Scheduler scheduler(Options(/*max_batch_size=*/3, kForever, /*queue_capacity=*/100,
                              /*num_lanes=*/3));
  // Lane 2 has the oldest item but is not ready; lane 1 is full before lane 0.
  ASSERT_TRUE(scheduler.Enqueue(2, {200, 201}).ok());
  ASSERT_TRUE(scheduler.Enqueue(1, {100, 101, 102}).ok());
  ASSERT_TRUE(scheduler.Enqueue(0, {0, 1}).ok());
  ASSERT_TRUE(scheduler.Enqueue(0, {2, 3}).ok());
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.lane, 1);
  EXPECT_EQ(batch.items, (std::vector<int>{100, 101, 102}));
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.lane, 0);
  EXPECT_EQ(batch.items, (std::vector<int>{0, 1, 2}));
  // Now no lane is ready (lane 0 holds 3, lane 2 holds 200, 201): drain them,
  // oldest lane first.
  scheduler.Close();
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.lane, 2);
  EXPECT_EQ(batch.items, (std::vector<int>{200, 201}));
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.lane, 0);
  EXPECT_EQ(batch.items, (std::vector<int>{3}));
}

TEST(BatchSchedulerTest, AmongLanesPastTheirDelayTheOldestGoesFirst) {
  Scheduler scheduler(Options(/*max_batch_size=*/8, absl::ZeroDuration(),
                              /*queue_capacity=*/100, /*num_lanes=*/3));
  ASSERT_TRUE(scheduler.Enqueue(2, {20}).ok());
  ASSERT_TRUE(scheduler.Enqueue(0, {0}).ok());
  ASSERT_TRUE(scheduler.Enqueue(1, {10}).ok());
  ASSERT_TRUE(scheduler.Enqueue(2, {21}).ok());
  std::vector<int> lanes;
  Batch batch;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
    lanes.push_back(batch.lane);
  }
  EXPECT_EQ(lanes, (std::vector<int>{2, 0, 1}));
}

TEST(BatchSchedulerTest, DeadItemsAreDroppedDoNotCountAndFreeCapacity) {
  std::set<int> cancelled;  // written only while no NextBatch() runs
  Scheduler scheduler(Options(/*max_batch_size=*/3, kForever, /*queue_capacity=*/7),
                      [&cancelled](const int& item) { return cancelled.count(item) == 0; });
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3, 4, 5, 6, 7}).ok());
  // Liveness is asked when the batch is formed, not at Enqueue().
  cancelled = {1, 3};
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{2, 4, 5}));  // three live, past two dead
  EXPECT_EQ(batch.dropped, (std::vector<int>{1, 3}));
  EXPECT_EQ(batch.enqueue_times.size(), 3u);
  EXPECT_EQ(scheduler.size(), 2);
  // The dead ones' places are free again.
  EXPECT_TRUE(scheduler.Enqueue(0, {8, 9, 10, 11, 12}).ok());
  EXPECT_EQ(scheduler.size(), 7);
}

TEST(BatchSchedulerTest, BatchOfOnlyDeadItemsComesOutPromptly) {
  Scheduler scheduler(Options(/*max_batch_size=*/2, kForever),
                      [](const int& item) { return item >= 0; });
  ASSERT_TRUE(scheduler.Enqueue(0, {-1, -2}).ok());
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_TRUE(batch.items.empty());
  EXPECT_TRUE(batch.enqueue_times.empty());
  EXPECT_EQ(batch.dropped, (std::vector<int>{-1, -2}));
  EXPECT_EQ(scheduler.size(), 0);
}

TEST(BatchSchedulerTest, CloseDrainsThenReturnsFalseAndRefusesNewItems) {
  Scheduler scheduler(Options(/*max_batch_size=*/4, kForever));
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3, 4, 5, 6}).ok());
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{1, 2, 3, 4}));
  scheduler.Close();
  const absl::Status refused = scheduler.Enqueue(0, {7});
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  // Drained without waiting kForever for companions.
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{5, 6}));
  batch.items = {42};
  EXPECT_FALSE(scheduler.NextBatch(&batch));
  EXPECT_EQ(batch.items, (std::vector<int>{42}));  // untouched
  EXPECT_FALSE(scheduler.NextBatch(&batch));
  scheduler.Close();  // idempotent
  EXPECT_EQ(scheduler.Enqueue(0, {}).code(), absl::StatusCode::kUnavailable);
}

TEST(BatchSchedulerTest, CloseWakesWaitingWorkers) {
  Scheduler scheduler(Options(/*max_batch_size=*/4, kForever));
  constexpr int kWorkers = 3;
  std::vector<std::thread> workers;
  std::vector<int> results(kWorkers, -1);
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      Batch batch;
      results[w] = scheduler.NextBatch(&batch) ? 1 : 0;
    });
  }
  // Whether or not they are already waiting, Close() must end every call.
  scheduler.Close();
  for (std::thread& t : workers) t.join();
  EXPECT_EQ(results, (std::vector<int>{0, 0, 0}));
}

TEST(BatchSchedulerTest, OneEnqueueFeedsEveryWaitingWorker) {
  // One Enqueue() wakes one worker; the batches it leaves behind must reach
  // the others while it is busy with its own.
  constexpr int kWorkers = 3;
  constexpr int kMaxBatch = 2;
  Scheduler scheduler(Options(kMaxBatch, kForever));
  absl::BlockingCounter about_to_wait(kWorkers);
  absl::BlockingCounter got_batch(kWorkers);
  absl::Notification release;  // the workers hold their batch until then
  std::vector<int> sizes(kWorkers, 0);
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      Batch batch;
      about_to_wait.DecrementCount();
      if (scheduler.NextBatch(&batch)) sizes[w] = static_cast<int>(batch.items.size());
      got_batch.DecrementCount();
      release.WaitForNotification();
    });
  }
  about_to_wait.Wait();  // usually they are inside NextBatch() by now
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3, 4, 5, 6}).ok());
  absl::Notification all_got_batches;
  std::thread watcher([&] {
    got_batch.Wait();
    all_got_batches.Notify();
  });
  const bool fed = all_got_batches.WaitForNotificationWithTimeout(kSafetyTimeout);
  EXPECT_TRUE(fed) << "a worker waited although a full batch was queued";
  scheduler.Close();  // ends a stuck NextBatch() so that everything joins
  release.Notify();
  for (std::thread& t : workers) t.join();
  watcher.join();
  if (fed) {
    EXPECT_EQ(sizes, (std::vector<int>{2, 2, 2}));
  }
}

TEST(BatchSchedulerTest, ConcurrentProducersAndWorkersDeliverEachItemExactlyOnce) {
  constexpr int kProducers = 4;
  constexpr int kItemsPerProducer = 5000;
  constexpr int kItems = kProducers * kItemsPerProducer;
  constexpr int kWorkers = 3;
  constexpr int kMaxBatch = 8;
  constexpr int kLanes = 2;
  auto is_dead = [](int item) { return item % 11 == 0; };
  Scheduler scheduler(Options(kMaxBatch, absl::Microseconds(200), kItems, kLanes),
                      [&is_dead](const int& item) { return !is_dead(item); });

  struct Seen {
    std::vector<int> items;
    std::vector<int> dropped;
    int mixed_lanes = 0;
    int oversized = 0;
  };
  std::vector<Seen> seen(kWorkers);
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&, w] {
      Batch batch;
      while (scheduler.NextBatch(&batch)) {
        if (static_cast<int>(batch.items.size()) > kMaxBatch) ++seen[w].oversized;
        for (int item : batch.items) {
          if (item % kLanes != batch.lane) ++seen[w].mixed_lanes;
          seen[w].items.push_back(item);
        }
        for (int item : batch.dropped) {
          if (item % kLanes != batch.lane) ++seen[w].mixed_lanes;
          seen[w].dropped.push_back(item);
        }
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      // Requests of 1..7 items, all of one lane (item % kLanes), as a handler
      // would submit them.
      std::vector<int> pending[kLanes];
      int request_size = 1;
      for (int i = 0; i < kItemsPerProducer; ++i) {
        const int item = p * kItemsPerProducer + i;
        std::vector<int>& request = pending[item % kLanes];
        request.push_back(item);
        if (static_cast<int>(request.size()) == request_size) {
          EXPECT_TRUE(scheduler.Enqueue(item % kLanes, std::move(request)).ok());
          request.clear();
          request_size = request_size % 7 + 1;
        }
      }
      for (int lane = 0; lane < kLanes; ++lane) {
        if (!pending[lane].empty()) {
          EXPECT_TRUE(scheduler.Enqueue(lane, std::move(pending[lane])).ok());
        }
      }
    });
  }
  for (std::thread& t : producers) t.join();
  scheduler.Close();
  for (std::thread& t : workers) t.join();

  std::multiset<int> delivered;
  std::multiset<int> dropped;
  for (const Seen& s : seen) {
    EXPECT_EQ(s.mixed_lanes, 0);
    EXPECT_EQ(s.oversized, 0);
    delivered.insert(s.items.begin(), s.items.end());
    dropped.insert(s.dropped.begin(), s.dropped.end());
  }
  int expected_dead = 0;
  for (int item = 0; item < kItems; ++item) {
    if (is_dead(item)) {
      ++expected_dead;
      ASSERT_EQ(dropped.count(item), 1u) << item;
      ASSERT_EQ(delivered.count(item), 0u) << item;
    } else {
      ASSERT_EQ(delivered.count(item), 1u) << item;
      ASSERT_EQ(dropped.count(item), 0u) << item;
    }
  }
  EXPECT_EQ(delivered.size() + dropped.size(), static_cast<size_t>(kItems));
  EXPECT_EQ(static_cast<int>(dropped.size()), expected_dead);
  EXPECT_EQ(scheduler.size(), 0);
}

TEST(BatchSchedulerTest, ValidatesOptions) {
  EXPECT_TRUE(ValidateBatchSchedulerOptions(BatchSchedulerOptions()).ok());
  EXPECT_EQ(ValidateBatchSchedulerOptions(Options(0, kForever)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBatchSchedulerOptions(Options(1, absl::Milliseconds(-1))).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBatchSchedulerOptions(Options(1, kForever, /*queue_capacity=*/0)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBatchSchedulerOptions(Options(1, kForever, 1, /*num_lanes=*/0)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(Options(0, kForever)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto created = Scheduler::Create(Options(2, absl::ZeroDuration()));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE((*created)->Enqueue(0, {1}).ok());
  EXPECT_EQ((*created)->size(), 1);
}

TEST(BatchSchedulerTest, InfiniteDelayReleasesOnlyFullLanesOrOnClose) {
  Scheduler scheduler(Options(/*max_batch_size=*/2, absl::InfiniteDuration()));
  ASSERT_TRUE(scheduler.Enqueue(0, {1, 2, 3}).ok());
  Batch batch;
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{1, 2}));
  scheduler.Close();
  ASSERT_TRUE(NextBatchOrFail(scheduler, &batch));
  EXPECT_EQ(batch.items, (std::vector<int>{3}));
}

}  // namespace
}  // namespace oclip
