// EncodeTicket and ClassifierCache: the two pieces of the server whose
// ordering rules keep requests alive and builds shared.

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/synchronization/notification.h"
#include "server/classifier_cache.h"
#include "server/encode_ticket.h"

namespace oclip {
namespace {

struct DoneRecorder {
  int calls = 0;
  absl::StatusOr<torch::Tensor> result = absl::UnknownError("not called");

  EncodeTicket::DoneCallback Callback() {
    return [this](absl::StatusOr<torch::Tensor> r) {
      ++calls;
      result = std::move(r);
    };
  }
};

TEST(EncodeTicketTest, StacksRowsInItemOrderOnceAllArrived) {
  DoneRecorder done;
  EncodeTicket ticket(3, absl::InfiniteFuture(), done.Callback());
  ticket.EndPreparation();
  ticket.OnResult(2, torch::full({4}, 2.0f));
  ticket.OnResult(0, torch::full({4}, 0.0f));
  EXPECT_EQ(done.calls, 0);
  ticket.OnResult(1, torch::full({4}, 1.0f));
  ASSERT_EQ(done.calls, 1);
  ASSERT_TRUE(done.result.ok());
  ASSERT_EQ(done.result->sizes(), (std::vector<int64_t>{3, 4}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*done.result)[i][0].item<float>(), i);
  // Late or repeated deliveries change nothing.
  ticket.OnResult(1, torch::zeros({4}));
  ticket.OnError(0, absl::InternalError("late"));
  EXPECT_EQ(done.calls, 1);
  EXPECT_FALSE(ticket.IsLive());
}

TEST(EncodeTicketTest, CancelDuringPreparationWaitsForItsEnd) {
  DoneRecorder done;
  EncodeTicket ticket(2, absl::InfiniteFuture(), done.Callback());
  ticket.Cancel();
  EXPECT_FALSE(ticket.IsLive());
  // The request may still be read by preparation: no reply yet.
  EXPECT_EQ(done.calls, 0);
  ticket.EndPreparation();
  ASSERT_EQ(done.calls, 1);
  EXPECT_EQ(done.result.status().code(), absl::StatusCode::kCancelled);
}

TEST(EncodeTicketTest, FirstFailureWinsAndNamesTheItem) {
  DoneRecorder done;
  EncodeTicket ticket(3, absl::InfiniteFuture(), done.Callback());
  ticket.EndPreparation();
  ticket.OnResult(0, torch::zeros({4}));
  ticket.OnError(1, absl::InternalError("boom"));
  ticket.OnError(2, absl::InvalidArgumentError("second"));
  ASSERT_EQ(done.calls, 1);
  EXPECT_EQ(done.result.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(done.result.status().message(), "item 1: boom");
}

TEST(EncodeTicketTest, PassedDeadlineMakesItemsDeadAndIsTheDropReason) {
  DoneRecorder done;
  EncodeTicket ticket(1, absl::Now() - absl::Seconds(1), done.Callback());
  EXPECT_FALSE(ticket.IsLive());
  EXPECT_EQ(ticket.DropReason().code(), absl::StatusCode::kDeadlineExceeded);
  // gRPC cancels expired calls: that is reported as the expiry it is.
  ticket.Cancel();
  ticket.EndPreparation();
  ASSERT_EQ(done.calls, 1);
  EXPECT_EQ(done.result.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(EncodeTicketTest, ConcurrentDeliveriesCompleteExactlyOnce) {
  constexpr int kItems = 64;
  std::atomic<int> calls{0};
  absl::StatusOr<torch::Tensor> result;
  EncodeTicket ticket(kItems, absl::InfiniteFuture(), [&](absl::StatusOr<torch::Tensor> r) {
    ++calls;
    result = std::move(r);
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kItems; i += 4) ticket.OnResult(i, torch::full({2}, float(i)));
    });
  }
  threads.emplace_back([&] { ticket.EndPreparation(); });
  for (std::thread& thread : threads) thread.join();
  ASSERT_EQ(calls.load(), 1);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)[kItems - 1][1].item<float>(), kItems - 1);
}

// A scheduler that runs builds on threads the test joins.
struct ThreadScheduler {
  std::vector<std::thread> threads;
  ClassifierCache::Scheduler Get() {
    return [this](std::function<void()> task) { threads.emplace_back(std::move(task)); };
  }
  ~ThreadScheduler() {
    for (std::thread& thread : threads) thread.join();
  }
};

TEST(ClassifierCacheTest, ConcurrentMissesShareOneBuildAndHitsReuseIt) {
  ClassifierCache cache(4);
  std::atomic<int> builds{0};
  absl::Notification release;
  auto build = [&]() -> absl::StatusOr<torch::Tensor> {
    ++builds;
    release.WaitForNotification();
    return torch::ones({2, 3});
  };
  std::atomic<int> answers{0};
  {
    ThreadScheduler scheduler;
    const std::string key = ClassifierCache::Key({"dog", "cat"}, {"a {}."});
    for (int i = 0; i < 3; ++i) {
      cache.Get(key, build, scheduler.Get(), [&](absl::StatusOr<torch::Tensor> c) {
        EXPECT_TRUE(c.ok());
        ++answers;
      });
    }
    release.Notify();
  }
  EXPECT_EQ(builds.load(), 1);
  EXPECT_EQ(answers.load(), 3);
  EXPECT_EQ(cache.size(), 1);
  // A hit answers at once, on the caller's thread, without building.
  bool hit = false;
  cache.Get(ClassifierCache::Key({"dog", "cat"}, {"a {}."}), build,
            [](std::function<void()>) { FAIL() << "a hit must not build"; },
            [&](absl::StatusOr<torch::Tensor> c) { hit = c.ok(); });
  EXPECT_TRUE(hit);
  EXPECT_EQ(builds.load(), 1);
}

TEST(ClassifierCacheTest, FailuresAreNotCachedAndTheLeastRecentEntryGoesFirst) {
  ClassifierCache cache(2);
  auto run_inline = [](std::function<void()> task) { task(); };
  absl::Status seen;
  cache.Get("bad", [] { return absl::StatusOr<torch::Tensor>(absl::InternalError("no")); },
            run_inline, [&](absl::StatusOr<torch::Tensor> c) { seen = c.status(); });
  EXPECT_EQ(seen.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(cache.size(), 0);

  int builds = 0;
  auto build = [&] {
    ++builds;
    return absl::StatusOr<torch::Tensor>(torch::zeros({1}));
  };
  auto ignore = [](absl::StatusOr<torch::Tensor>) {};
  cache.Get("a", build, run_inline, ignore);
  cache.Get("b", build, run_inline, ignore);
  cache.Get("a", build, run_inline, ignore);  // Hit: "a" is now the most recent.
  cache.Get("c", build, run_inline, ignore);  // Evicts "b".
  EXPECT_EQ(builds, 3);
  cache.Get("a", build, run_inline, ignore);
  EXPECT_EQ(builds, 3);
  cache.Get("b", build, run_inline, ignore);
  EXPECT_EQ(builds, 4);
}

TEST(ClassifierCacheTest, KeysCannotBeForgedBySeparators) {
  EXPECT_NE(ClassifierCache::Key({"a", "b"}, {"{}"}), ClassifierCache::Key({"a\nb"}, {"{}"}));
  EXPECT_NE(ClassifierCache::Key({"ab"}, {"{}"}), ClassifierCache::Key({"a", "b"}, {"{}"}));
  EXPECT_NE(ClassifierCache::Key({"x"}, {"{}", "a {}"}), ClassifierCache::Key({"x"}, {"{}a {}"}));
}

}  // namespace
}  // namespace oclip
