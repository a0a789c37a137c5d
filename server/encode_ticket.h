// An EncodeTicket follows the items of one request (the images of an
// EncodeImage call, the texts of an EncodeText call, one message of a stream)
// through a model's batch queue and reports their features exactly once.
//
// Life of a ticket: created with the number of items and the call's deadline;
// the items are prepared (decoded, tokenized) and enqueued; workers deliver
// one feature row per item (OnResult) or a failure (OnError); when every row
// is in, `done` receives the rows stacked as float [n, D] on the CPU, in item
// order. The first failure, a Cancel() or Fail() completes the ticket at once
// with that status, and the items still queued are dropped when a worker
// meets them (IsLive() turns false).
//
// While the request is being prepared its bytes are still read from the
// caller's message, so completion waits for EndPreparation(): a ticket
// cancelled during preparation completes when preparation ends, never
// earlier. That keeps the request alive for as long as anything reads it.
//
// Thread safety: every method may be called from any thread; `done` runs
// once, on the thread that completed the ticket, without locks held.

#ifndef OCLIP_SERVER_ENCODE_TICKET_H_
#define OCLIP_SERVER_ENCODE_TICKET_H_

#include <functional>
#include <vector>

#include <torch/torch.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace oclip {

class EncodeTicket {
 public:
  using DoneCallback = std::function<void(absl::StatusOr<torch::Tensor>)>;

  // `deadline` may be absl::InfiniteFuture(). Preparation starts at once.
  EncodeTicket(int num_items, absl::Time deadline, DoneCallback done);

  EncodeTicket(const EncodeTicket&) = delete;
  EncodeTicket& operator=(const EncodeTicket&) = delete;

  int num_items() const { return num_items_; }
  absl::Time deadline() const { return deadline_; }

  // False once the ticket completed or was cancelled, or its deadline passed:
  // its queued items are then dropped, not computed.
  bool IsLive() const;
  // Why a dead ticket's items are dropped: DEADLINE_EXCEEDED or CANCELLED.
  absl::Status DropReason() const;

  // Preparation is over (the request's bytes are no longer read).
  void EndPreparation();
  // features: float [D] on the CPU.
  void OnResult(int index, torch::Tensor features);
  void OnError(int index, absl::Status status);
  // Completes with `status` (a preparation or enqueue failure).
  void Fail(absl::Status status);
  // The client went away.
  void Cancel();

 private:
  // Runs `done_` if the ticket can complete now; call without mu_ held.
  void MaybeComplete();

  const int num_items_;
  const absl::Time deadline_;

  mutable absl::Mutex mu_;
  DoneCallback done_ ABSL_GUARDED_BY(mu_);
  std::vector<torch::Tensor> rows_ ABSL_GUARDED_BY(mu_);
  int rows_received_ ABSL_GUARDED_BY(mu_) = 0;
  bool preparing_ ABSL_GUARDED_BY(mu_) = true;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool completed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
};

}  // namespace oclip

#endif  // OCLIP_SERVER_ENCODE_TICKET_H_
