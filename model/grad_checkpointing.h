// Gradient (activation) checkpointing, as torch.utils.checkpoint's reentrant
// variant does it for OpenCLIP's `--grad-checkpointing`: a residual block
// runs without keeping its activations, and the backward pass runs it again
// to get them. LibTorch 1.13's C++ API has no such utility.
//
// CheckpointedForward(fn, x, parameters) returns fn(x). Forward: fn runs with
// grad disabled; only x is kept. Backward: fn runs again with grad enabled on
// a detached copy of x, under the autocast state (CPU and CUDA: enabled,
// dtype) and with the RNG state (CPU generator, and x's device generator)
// that the forward had, and torch::autograd::grad sends the incoming
// gradient back to x and to `parameters`. Parameter gradients reach the
// autograd engine as this node's outputs, so they accumulate into `.grad`
// exactly as the un-checkpointed graph's would (locked parameters, with
// requires_grad false, are left out). The gradient-free forward does not use
// autocast's weight cache (its copies would carry no gradient to a later use
// of the same weight in the same autocast scope).
//
// Contract:
//   - fn must be a pure function of x and `parameters` (plus tensors it
//     captured that need no gradient, e.g. an attention mask). Its RNG use
//     is replayed (CLIP blocks use none: the configs have no dropout, and
//     patch dropout runs before the blocks), so dropout inside fn would
//     see the same masks in both runs.
//   - `parameters` are the tensors fn reads that may need gradients (the
//     block's parameters); any that fn does not reach get no gradient.
//   - Only worth calling when gradients are recorded: UseGradCheckpointing()
//     says so (grad mode on, not InferenceMode). Modules call fn directly
//     otherwise, so evaluation and inference paths are unchanged.
//   - fn and what it captures are kept alive by the autograd graph until the
//     backward pass (or the graph) is released.
// LibTorch errors (c10::Error) propagate to the caller, as from any forward.

#ifndef OCLIP_MODEL_GRAD_CHECKPOINTING_H_
#define OCLIP_MODEL_GRAD_CHECKPOINTING_H_

#include <functional>
#include <vector>

#include <torch/torch.h>

namespace oclip {

using CheckpointedFunction = std::function<torch::Tensor(const torch::Tensor&)>;

// Whether a module with checkpointing enabled should checkpoint now.
bool UseGradCheckpointing();

torch::Tensor CheckpointedForward(CheckpointedFunction fn, const torch::Tensor& x,
                                  const std::vector<torch::Tensor>& parameters);

}  // namespace oclip

#endif  // OCLIP_MODEL_GRAD_CHECKPOINTING_H_
