#include "core/thread_pool.h"

#include <algorithm>
#include <utility>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace oclip {
namespace {

int ResolveNumThreads(int num_threads) {
  if (num_threads > 0) return num_threads;
  // hardware_concurrency() may report 0 when it cannot tell.
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(ResolveNumThreads(num_threads)) {
  {
    // Counted before the threads start so that Schedule() never sees zero live
    // workers while the pool is still in service.
    absl::MutexLock lock(&mu_);
    live_workers_ = num_threads_;
  }
  threads_.reserve(num_threads_);
  for (int i = 0; i < num_threads_; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  work_available_.SignalAll();
  for (std::thread& thread : threads_) thread.join();
}

void ThreadPool::Schedule(std::function<void()> task) {
  if (!task) return;
  {
    absl::MutexLock lock(&mu_);
    if (live_workers_ > 0) {
      queue_.push_back(std::move(task));
      work_available_.Signal();
      return;
    }
  }
  // Every worker has exited: only a caller racing the destructor gets here.
  // Running the task here keeps the promise that scheduled work always runs.
  task();
}

int ThreadPool::pending() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void ThreadPool::WorkerLoop() {
#if defined(__linux__)
  // Visible in top -H, gdb and perf; the name must fit 15 characters.
  pthread_setname_np(pthread_self(), "oclip-pool");
#endif
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      while (queue_.empty() && !stopping_) work_available_.Wait(&mu_);
      if (queue_.empty()) {
        // Stopping and drained. A task still running on another worker may
        // schedule more; that worker is still live and will pick it up.
        --live_workers_;
        return;
      }
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace oclip
