// The per-model dynamic batcher of `oclip serve` (Triton-style): request
// handlers Enqueue() items, one worker per device calls NextBatch() in a loop
// and runs each batch through the model.
//
// Queue. Items wait in `num_lanes` FIFO lanes (e.g. lane 0 = images and lane 1
// = texts of one model); a batch holds items of one lane only. The queue is
// bounded: `queue_capacity` items over all lanes. Enqueue() admits all of a
// request's items or none, so a request is never half-queued.
//
// Batching. A lane is ready when it holds >= max_batch_size items, when its
// oldest item has waited >= max_queue_delay, or once Close() was called (drain
// without waiting). NextBatch() blocks until some lane is ready and takes up to
// max_batch_size items, FIFO, from the ready lane whose oldest item is oldest
// (ties: the lower lane). Several workers may call NextBatch() at once; each
// item goes to exactly one batch. Waiting is a CondVar wait until the oldest
// item's due time: no polling.
//
// Cancelled and expired items. The optional `is_live(item)` is asked when an
// item is taken into a batch (not at Enqueue): a dead item goes to
// Batch::dropped, frees its place in the queue, and does not count toward the
// batch's max_batch_size. The caller finishes dropped items (e.g. with
// CANCELLED / DEADLINE_EXCEEDED). Readiness counts queued items whether live or
// not (asking is_live of the whole queue on every check would cost more than it
// saves), so:
//   - a batch may hold fewer than max_batch_size live items although its lane
//     was full, when some of the items were dead;
//   - a batch may hold no live item at all and only dropped ones: the caller
//     must expect Batch::items to be empty (and just finish the dropped);
//   - a dead item leaves the queue at the latest when its lane's oldest item is
//     due, i.e. within max_queue_delay of reaching the front.
// is_live runs on the worker's thread with the scheduler's lock held: it must
// be cheap, must not block or throw, and must not call into the scheduler.
//
// Clocks. Readiness is decided on a monotonic clock (std::chrono::
// steady_clock), so wall-clock steps never release or hold items early or late
// by themselves. Abseil's CondVar turns a timeout into a wall-clock deadline
// internally, so a backward wall-clock step while a worker waits can delay its
// wake-up until the next Enqueue()/Close(); the decision after any wake-up is
// right. Batch::enqueue_times are wall-clock (absl::Now()) for metrics and logs.
//
// Errors (absl::Status codes of Enqueue()):
//   INVALID_ARGUMENT    lane out of range, or more items than queue_capacity
//                       (they could never fit)
//   RESOURCE_EXHAUSTED  "queue full: N queued, capacity C": not all items fit
//                       now; nothing was queued, retry later
//   UNAVAILABLE         Close() was called
//
// Thread safety: every method may be called concurrently from any thread.
// Destroying the scheduler while a thread is inside NextBatch() is a bug: the
// owner calls Close() and joins its workers first. T must be movable; items are
// moved in and out, never copied.

#ifndef OCLIP_SERVER_BATCH_SCHEDULER_H_
#define OCLIP_SERVER_BATCH_SCHEDULER_H_

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace oclip {

struct BatchSchedulerOptions {
  // Most live items in one batch; >= 1.
  int max_batch_size = 32;
  // How long a lane's oldest item may wait for companions before its lane is
  // run as it is; >= 0. Zero: run what is there at once. InfiniteDuration():
  // only full lanes (or Close()) release items.
  absl::Duration max_queue_delay = absl::Milliseconds(5);
  // Items queued over all lanes, live or not yet known to be dead; >= 1.
  int queue_capacity = 1024;
  // Independent FIFO lanes; a batch never mixes lanes; >= 1.
  int num_lanes = 1;
};

// OK, or INVALID_ARGUMENT naming the first field out of range.
absl::Status ValidateBatchSchedulerOptions(const BatchSchedulerOptions& options);

namespace batch_scheduler_internal {
// Non-template parts of BatchScheduler, in batch_scheduler.cc.
absl::Status QueueFullError(int queued, int capacity);
absl::Status CheckEnqueueArguments(const BatchSchedulerOptions& options, int lane,
                                   size_t num_items);
absl::Status ClosedError();
// Options with every field moved into its valid range.
BatchSchedulerOptions Sanitize(BatchSchedulerOptions options);
}  // namespace batch_scheduler_internal

template <typename T>
class BatchScheduler {
 public:
  struct Batch {
    int lane = 0;
    // Live items, FIFO order, at most max_batch_size; may be empty (see above).
    std::vector<T> items;
    // Wall-clock enqueue time of each of `items` (queue-wait metrics).
    std::vector<absl::Time> enqueue_times;
    // Dead items met while forming this batch; the caller finishes them.
    std::vector<T> dropped;
  };

  // Validates `options` (INVALID_ARGUMENT) and builds a scheduler.
  static absl::StatusOr<std::unique_ptr<BatchScheduler>> Create(
      const BatchSchedulerOptions& options, std::function<bool(const T&)> is_live = nullptr) {
    absl::Status status = ValidateBatchSchedulerOptions(options);
    if (!status.ok()) return status;
    return std::make_unique<BatchScheduler>(options, std::move(is_live));
  }

  // `options` should pass ValidateBatchSchedulerOptions() (or use Create());
  // fields out of range are moved to the nearest valid value. `is_live`:
  // nullptr means every item is live.
  explicit BatchScheduler(const BatchSchedulerOptions& options,
                          std::function<bool(const T&)> is_live = nullptr)
      : options_(batch_scheduler_internal::Sanitize(options)),
        is_live_(std::move(is_live)),
        lanes_(options_.num_lanes) {}

  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Queues all of `items` at the back of `lane`, or none of them (see the
  // error codes above). An empty `items` is OK and queues nothing.
  absl::Status Enqueue(int lane, std::vector<T> items) {
    absl::Status status =
        batch_scheduler_internal::CheckEnqueueArguments(options_, lane, items.size());
    if (!status.ok()) return status;
    const int count = static_cast<int>(items.size());
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return batch_scheduler_internal::ClosedError();
      if (count == 0) return absl::OkStatus();
      if (count > options_.queue_capacity - size_) {
        return batch_scheduler_internal::QueueFullError(size_, options_.queue_capacity);
      }
      // Read under the lock so that enqueue times never decrease along a lane:
      // the front item is then always the oldest, which readiness relies on.
      const absl::Duration steady_now = SteadyNow();
      const absl::Time wall_now = absl::Now();
      std::deque<Entry>& queue = lanes_[lane];
      for (T& item : items) queue.push_back(Entry{std::move(item), steady_now, wall_now});
      size_ += count;
    }
    // One waiter is enough: it either takes a batch (and hands on to the next
    // waiter if more is queued) or waits again until the new earliest due time.
    ready_or_changed_.Signal();
    return absl::OkStatus();
  }

  // Blocks until a lane is ready and moves a batch from it into `*batch`
  // (whose previous contents are replaced). Returns false, leaving `*batch`
  // untouched, once Close() was called and the queue is empty.
  bool NextBatch(Batch* batch) {
    bool more_queued = false;
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        const absl::Duration now = SteadyNow();
        absl::Duration earliest_due;
        const int lane = PickReadyLane(now, &earliest_due);
        if (lane >= 0) {
          FormBatch(lane, batch);
          more_queued = size_ > 0;
          break;
        }
        if (closed_) return false;  // closed and nothing queued
        if (earliest_due == absl::InfiniteDuration()) {
          ready_or_changed_.Wait(&mu_);
        } else {
          ready_or_changed_.WaitWithTimeout(&mu_, earliest_due - now);
        }
      }
    }
    // Hand on: another worker may take the next ready batch now, or must learn
    // the remaining items' due time (Enqueue() woke only one waiter).
    if (more_queued) ready_or_changed_.Signal();
    return true;
  }

  // Refuses new items from now on; NextBatch() drains what is queued without
  // waiting for max_queue_delay, then returns false. Idempotent.
  void Close() {
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
    }
    ready_or_changed_.SignalAll();
  }

  // Items queued over all lanes (a snapshot, for a queue-depth gauge).
  int size() const {
    absl::MutexLock lock(&mu_);
    return size_;
  }

  const BatchSchedulerOptions& options() const { return options_; }

 private:
  struct Entry {
    T item;
    absl::Duration steady_time;  // since the steady clock's epoch: readiness
    absl::Time wall_time;        // reported in Batch::enqueue_times
  };

  static absl::Duration SteadyNow() {
    return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
  }

  // The ready lane whose oldest item is the oldest (ties: the lower lane), or
  // -1 when none is ready; then `*earliest_due` is when the first lane will be
  // (InfiniteDuration() if never without new items or Close()).
  int PickReadyLane(absl::Duration now, absl::Duration* earliest_due) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int best_lane = -1;
    *earliest_due = absl::InfiniteDuration();
    for (int lane = 0; lane < options_.num_lanes; ++lane) {
      const std::deque<Entry>& queue = lanes_[lane];
      if (queue.empty()) continue;
      const absl::Duration oldest = queue.front().steady_time;
      // Saturating: an infinite max_queue_delay gives an infinite due time.
      const absl::Duration due = oldest + options_.max_queue_delay;
      const bool ready =
          closed_ || static_cast<int>(queue.size()) >= options_.max_batch_size || now >= due;
      if (ready) {
        if (best_lane < 0 || oldest < lanes_[best_lane].front().steady_time) best_lane = lane;
      } else if (due < *earliest_due) {
        *earliest_due = due;
      }
    }
    return best_lane;
  }

  // Moves up to max_batch_size live items (and the dead ones met on the way)
  // from the front of `lane` into `*batch`.
  void FormBatch(int lane, Batch* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Cleared rather than replaced so that a worker reusing one Batch keeps
    // the vectors' capacity.
    batch->lane = lane;
    batch->items.clear();
    batch->enqueue_times.clear();
    batch->dropped.clear();
    std::deque<Entry>& queue = lanes_[lane];
    while (!queue.empty() && static_cast<int>(batch->items.size()) < options_.max_batch_size) {
      Entry& entry = queue.front();
      if (!is_live_ || is_live_(entry.item)) {
        batch->items.push_back(std::move(entry.item));
        batch->enqueue_times.push_back(entry.wall_time);
      } else {
        batch->dropped.push_back(std::move(entry.item));
      }
      queue.pop_front();
      --size_;
    }
  }

  const BatchSchedulerOptions options_;
  const std::function<bool(const T&)> is_live_;

  mutable absl::Mutex mu_;
  // Signalled when items arrive, when a batch leaves items behind, on Close().
  absl::CondVar ready_or_changed_;
  std::vector<std::deque<Entry>> lanes_ ABSL_GUARDED_BY(mu_);
  int size_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace oclip

#endif  // OCLIP_SERVER_BATCH_SCHEDULER_H_
