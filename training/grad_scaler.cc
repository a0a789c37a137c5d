#include "training/grad_scaler.h"

namespace oclip {

GradScaler::GradScaler(const GradScalerOptions& options)
    : options_(options), scale_(options.init_scale) {}

void GradScaler::set_state(const GradScalerState& state) {
  scale_ = state.scale;
  growth_tracker_ = state.growth_tracker;
}

torch::Tensor GradScaler::Scale(const torch::Tensor& loss) const {
  if (!options_.enabled) return loss;
  return loss * scale_;
}

void GradScaler::Unscale(const std::vector<torch::Tensor>& parameters) {
  if (!options_.enabled || unscaled_) return;
  unscaled_ = true;
  // torch's _amp_foreach_non_finite_check_and_unscale_: multiply by the
  // float32 reciprocal, and one flag on the device (read once, in Step).
  const double inv_scale = static_cast<float>(1.0 / scale_);
  torch::Tensor found;
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& p : parameters) {
    torch::Tensor grad = p.grad();
    if (!grad.defined()) continue;
    torch::Tensor bad = torch::isfinite(grad).all().logical_not();
    found = found.defined() ? found.logical_or(bad) : bad;
    grad.mul_(inv_scale);
  }
  found_inf_ = found.defined() && found.item<bool>();
}

bool GradScaler::Step(const std::vector<torch::Tensor>& parameters,
                      const std::function<void()>& optimizer_step) {
  if (!options_.enabled) {
    optimizer_step();
    return true;
  }
  Unscale(parameters);
  if (found_inf_) return false;
  optimizer_step();
  return true;
}

void GradScaler::Update() {
  if (!options_.enabled) return;
  // torch's _amp_update_scale_.
  if (found_inf_) {
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
  } else if (++growth_tracker_ == options_.growth_interval) {
    scale_ *= options_.growth_factor;
    growth_tracker_ = 0;
  }
  unscaled_ = false;
  found_inf_ = false;
}

}  // namespace oclip
