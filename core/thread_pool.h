// A fixed-size pool of worker threads for CPU work: image decoding and
// preprocessing, tokenization, anything that must not run on a gRPC thread.
//
// Tasks run in FIFO order of scheduling (several at once, one per thread), each
// exactly once. Schedule() only queues: it never waits for a task or for a free
// thread, and the queue is unbounded (callers bound their own work, e.g. the
// server admits a request to the batcher before it decodes its images).
//
// Lifetime: the destructor runs every task already scheduled, then joins the
// threads. While it drains, Schedule() keeps accepting tasks, so a running task
// may schedule follow-up work and that work runs too before the destructor
// returns. Should a thread outside the pool race the destructor and call
// Schedule() after the last worker has exited, the task runs inline on the
// calling thread: a scheduled task is never dropped. The pool must not be
// destroyed from one of its own tasks (it would join itself).
//
// Tasks must not throw: as with std::thread, an exception escaping a task ends
// the process (std::terminate). Catch library exceptions inside the task and
// report them as an absl::Status through whatever the task completes.
//
// Thread safety: all methods may be called concurrently from any thread,
// including from the pool's own tasks. Threads are named "oclip-pool" on Linux.

#ifndef OCLIP_CORE_THREAD_POOL_H_
#define OCLIP_CORE_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace oclip {

class ThreadPool {
 public:
  // Starts `num_threads` threads; <= 0 means std::thread::hardware_concurrency()
  // (at least one).
  explicit ThreadPool(int num_threads);
  // Runs every task already scheduled (and those they schedule), then joins.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `task` to run on one of the pool's threads. An empty std::function
  // is ignored.
  void Schedule(std::function<void()> task);

  int num_threads() const { return num_threads_; }

  // Tasks queued and not yet started (a snapshot, for a queue-depth gauge).
  int pending() const;

 private:
  void WorkerLoop();

  const int num_threads_;

  mutable absl::Mutex mu_;
  // Signalled when a task is queued and when the destructor starts.
  absl::CondVar work_available_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Workers that have not left WorkerLoop(); 0 only at the end of the
  // destructor's drain.
  int live_workers_ ABSL_GUARDED_BY(mu_) = 0;

  // Written only by the constructor and joined by the destructor.
  std::vector<std::thread> threads_;
};

}  // namespace oclip

#endif  // OCLIP_CORE_THREAD_POOL_H_
