#include "server/classifier_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace oclip {

std::string ClassifierCache::Key(const std::vector<std::string>& labels,
                                 const std::vector<std::string>& templates) {
  // Length-prefixed fields: no choice of separator can be forged by a label.
  std::string key;
  for (const std::string& label : labels) absl::StrAppend(&key, "L", label.size(), ":", label);
  for (const std::string& t : templates) absl::StrAppend(&key, "T", t.size(), ":", t);
  return key;
}

void ClassifierCache::Get(const std::string& key, const Builder& build,
                          const Scheduler& schedule, Callback done) {
  torch::Tensor hit;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      hit = it->second->second;
    } else if (auto waiting = pending_.find(key); waiting != pending_.end()) {
      waiting->second.push_back(std::move(done));
      return;
    } else {
      pending_[key].push_back(std::move(done));
    }
  }
  if (hit.defined()) {
    done(hit);
    return;
  }
  schedule([this, key, build] { Finish(key, build()); });
}

void ClassifierCache::Finish(const std::string& key,
                             const absl::StatusOr<torch::Tensor>& result) {
  std::vector<Callback> waiters;
  {
    absl::MutexLock lock(&mu_);
    waiters = std::move(pending_[key]);
    pending_.erase(key);
    if (result.ok() && capacity_ > 0) {
      lru_.emplace_front(key, *result);
      index_[key] = lru_.begin();
      while (static_cast<int>(lru_.size()) > capacity_) {
        index_.erase(lru_.back().first);
        lru_.pop_back();
      }
    }
  }
  for (Callback& waiter : waiters) waiter(result);
}

int ClassifierCache::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(lru_.size());
}

}  // namespace oclip
