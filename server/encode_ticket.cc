#include "server/encode_ticket.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace oclip {

EncodeTicket::EncodeTicket(int num_items, absl::Time deadline, DoneCallback done)
    : num_items_(num_items), deadline_(deadline), done_(std::move(done)), rows_(num_items) {}

bool EncodeTicket::IsLive() const {
  {
    absl::MutexLock lock(&mu_);
    if (completed_ || cancelled_ || !failure_.ok()) return false;
  }
  return absl::Now() < deadline_;
}

absl::Status EncodeTicket::DropReason() const {
  // gRPC cancels a call whose deadline passed: that is an expiry, not a
  // client going away.
  if (absl::Now() >= deadline_) {
    return absl::DeadlineExceededError("the deadline passed while the request was queued");
  }
  absl::MutexLock lock(&mu_);
  if (!failure_.ok()) return failure_;
  return absl::CancelledError("the call was cancelled");
}

void EncodeTicket::EndPreparation() {
  {
    absl::MutexLock lock(&mu_);
    preparing_ = false;
  }
  MaybeComplete();
}

void EncodeTicket::OnResult(int index, torch::Tensor features) {
  {
    absl::MutexLock lock(&mu_);
    if (completed_ || index < 0 || index >= num_items_ || rows_[index].defined()) return;
    rows_[index] = std::move(features);
    ++rows_received_;
  }
  MaybeComplete();
}

void EncodeTicket::OnError(int index, absl::Status status) {
  Fail(absl::Status(status.code(), absl::StrCat("item ", index, ": ", status.message())));
}

void EncodeTicket::Fail(absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (failure_.ok()) failure_ = std::move(status);
  }
  MaybeComplete();
}

void EncodeTicket::Cancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  MaybeComplete();
}

void EncodeTicket::MaybeComplete() {
  DoneCallback done;
  absl::StatusOr<torch::Tensor> result;
  std::vector<torch::Tensor> rows;
  {
    absl::MutexLock lock(&mu_);
    if (completed_ || preparing_) return;
    if (cancelled_) {
      result = absl::Now() >= deadline_
                   ? absl::DeadlineExceededError("the deadline passed before the call was done")
                   : absl::CancelledError("the call was cancelled");
    } else if (!failure_.ok()) {
      result = failure_;
    } else if (rows_received_ == num_items_) {
      rows = std::move(rows_);
      result = torch::empty({0, 0});
    } else {
      return;
    }
    completed_ = true;
    done = std::move(done_);
  }
  if (!rows.empty()) result = torch::stack(rows);
  done(std::move(result));
}

}  // namespace oclip
