// An LRU cache of zero-shot classifiers (float [embed_dim, num_labels] on the
// CPU), keyed by the labels and templates they were built from.
//
// Building a classifier encodes labels x templates prompts, seconds to
// minutes of model time, so concurrent misses of one key share one build:
// the first caller builds, later callers wait for its result. A failed build
// is reported to every waiter and not cached.
//
// Thread safety: all methods may be called from any thread. Callbacks run on
// the caller's thread (hit) or the builder's thread (miss), without locks
// held.

#ifndef OCLIP_SERVER_CLASSIFIER_CACHE_H_
#define OCLIP_SERVER_CLASSIFIER_CACHE_H_

#include <functional>
#include <list>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace oclip {

class ClassifierCache {
 public:
  using Callback = std::function<void(absl::StatusOr<torch::Tensor>)>;
  using Builder = std::function<absl::StatusOr<torch::Tensor>()>;
  // Runs a build somewhere else (e.g. on a thread pool).
  using Scheduler = std::function<void(std::function<void()>)>;

  // capacity: entries kept; 0 disables caching (every call builds).
  explicit ClassifierCache(int capacity) : capacity_(capacity) {}

  // An unambiguous key for (labels, templates).
  static std::string Key(const std::vector<std::string>& labels,
                         const std::vector<std::string>& templates);

  // Calls `done` once with the cached classifier, or with the result of
  // `build` run through `schedule` (shared with concurrent callers of `key`).
  void Get(const std::string& key, const Builder& build, const Scheduler& schedule,
           Callback done);

  int size() const;

 private:
  void Finish(const std::string& key, const absl::StatusOr<torch::Tensor>& result);

  const int capacity_;
  mutable absl::Mutex mu_;
  // Most recently used first.
  std::list<std::pair<std::string, torch::Tensor>> lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::list<std::pair<std::string, torch::Tensor>>::iterator>
      index_ ABSL_GUARDED_BY(mu_);
  // Builds in progress and the callers waiting for them.
  absl::flat_hash_map<std::string, std::vector<Callback>> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace oclip

#endif  // OCLIP_SERVER_CLASSIFIER_CACHE_H_
