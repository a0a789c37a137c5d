// OpenCLIP's contrastive loss (open_clip/loss.py ClipLoss) for one process or
// a data-parallel group, and the autograd-aware all_gather it needs.
//
// Inputs are the L2-normalized image and text features of this rank's batch,
// [n, D] each, and the *exp'd* logit scale s (a 0-dim tensor carrying grad).
// One process: logits = s·I·Tᵀ and s·T·Iᵀ, labels 0..n−1, loss = the mean of
// the two cross-entropies. Over `world` ranks (features gathered in rank
// order, N = n·world):
//   local_loss  gather_with_grad  logits                      labels
//   false       false             N×N, own slot re-inserted    0..N−1
//   false       true              N×N, autograd gather        0..N−1
//   true        false             n×N, no-grad gather          n·rank + 0..n−1
//   true        true              n×N, autograd gather         n·rank + 0..n−1
// exactly as OpenCLIP. With gather_with_grad the gradients, summed over ranks
// and then averaged as DDP does (distributed.h AverageGradients), equal those
// of one process over the whole batch; without it and without local_loss each
// rank's tower gradients come from its own samples only, so their average is
// the one-process gradient divided by `world`, while logit_scale's is the
// one-process gradient (OpenCLIP's behaviour, kept for parity).
//
// Every rank must call ClipLoss (and backward) in step: the gathers are
// collectives. Throws c10::Error like LibTorch on bad shapes or a failed
// collective.

#ifndef OCLIP_TRAINING_CLIP_LOSS_H_
#define OCLIP_TRAINING_CLIP_LOSS_H_

#include <torch/torch.h>

#include "training/communicator.h"

namespace oclip {

struct ClipLossOptions {
  bool local_loss = false;        // --local-loss
  bool gather_with_grad = false;  // --gather-with-grad
};

// `communicator` may be null (a world of one).
torch::Tensor ClipLoss(const torch::Tensor& image_features, const torch::Tensor& text_features,
                       const torch::Tensor& logit_scale, const ClipLossOptions& options,
                       Communicator* communicator);

// Every rank's `tensor` [n, ...] concatenated along dim 0 in rank order,
// [n·world, ...]. Backward sums the incoming gradient over ranks and returns
// this rank's slice (torch.distributed.nn.all_gather). Equal n on every rank.
torch::Tensor AllGatherWithGrad(const torch::Tensor& tensor, Communicator& communicator);

}  // namespace oclip

#endif  // OCLIP_TRAINING_CLIP_LOSS_H_
