// The optimiser side of OpenCLIP's training: AdamW over two parameter groups
// with OpenCLIP's weight-decay exclusions, global gradient-norm clipping,
// and the logit_scale clamp.
//
// Parameter groups (training/main.py): only parameters that require grad;
// "no decay" = ndim < 2 or the name contains "bn", "ln", "bias" or
// "logit_scale" (substring match, as OpenCLIP); "decay" = the rest, with
// --wd. Group 0 is no-decay, group 1 decay, as in OpenCLIP.
//
// AdamW is PyTorch's (torch.optim.AdamW, amsgrad off, single-tensor path):
//   p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//   p ← p − lr/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + ε)
// with t counted per parameter (parameters without a gradient are skipped).
// LibTorch 1.13's torch::optim::AdamW computes the same formula; this class
// exists so that its state is keyed by parameter *name* (checkpoints stay
// valid when parameter order changes, and are plain safetensors entries).
//
// Not thread-safe; parameters are updated in place under NoGradGuard.

#ifndef OCLIP_TRAINING_OPTIMIZER_H_
#define OCLIP_TRAINING_OPTIMIZER_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace oclip {

struct NamedParameter {
  std::string name;
  torch::Tensor tensor;
};

struct ParamGroup {
  std::vector<NamedParameter> params;
  double weight_decay = 0;
};

// OpenCLIP's exclusion rule for one parameter.
bool ExcludedFromWeightDecay(const std::string& name, const torch::Tensor& parameter);

// [no-decay (wd 0), decay (wd `weight_decay`)] over `model`'s trainable
// parameters in registration order.
std::vector<ParamGroup> OpenClipParamGroups(const torch::nn::Module& model, double weight_decay);

struct AdamWOptions {
  double lr = 5e-4;
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-6;
};

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, const AdamWOptions& options);

  // The learning rate of every group (OpenCLIP's scheduler sets them alike).
  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // Drops every gradient (set_to_none, PyTorch's default since 2.0).
  void ZeroGrad();
  // One update of every parameter that has a gradient.
  void Step();

  // State for checkpoints: "exp_avg/NAME", "exp_avg_sq/NAME" (parameter
  // dtype and shape) and "step/NAME" (int64 scalar) for every parameter that
  // has been stepped.
  std::map<std::string, torch::Tensor> StateDict() const;
  // Replaces the state; INVALID_ARGUMENT (state unchanged) for unknown names
  // or mismatched shapes.
  absl::Status LoadStateDict(const std::map<std::string, torch::Tensor>& state);

 private:
  struct ParamState {
    int64_t step = 0;
    torch::Tensor exp_avg;
    torch::Tensor exp_avg_sq;
  };

  std::vector<ParamGroup> groups_;
  AdamWOptions options_;
  std::map<std::string, ParamState> state_;
};

// Every parameter of `groups`, in group order.
std::vector<torch::Tensor> AllParameters(const std::vector<ParamGroup>& groups);

// The global L2 norm of the gradients of `parameters` (those without a
// gradient count as zero), as a double.
double GradNorm(const std::vector<torch::Tensor>& parameters);

// torch.nn.utils.clip_grad_norm_(parameters, max_norm, 2.0): scales every
// gradient by min(1, max_norm / (norm + 1e-6)); returns the norm before.
double ClipGradNorm(const std::vector<torch::Tensor>& parameters, double max_norm);

// OpenCLIP clamps the raw logit_scale to [0, ln 100] after every step.
void ClampLogitScale(torch::Tensor& logit_scale);

}  // namespace oclip

#endif  // OCLIP_TRAINING_OPTIMIZER_H_
