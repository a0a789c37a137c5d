// Dynamic loss scaling for fp16 mixed precision, as torch.cuda.amp.GradScaler
// does it (OpenCLIP creates one for --precision amp):
//
//   Scale(loss).backward();       // gradients of loss · scale
//   Unscale(parameters);          // optional, before clipping: grads / scale
//   bool stepped = Step(parameters, [&] { optimizer.Step(); });
//   Update();                     // adjust the scale for the next step
//
// Unscale divides every defined gradient by the scale once per step and
// records whether any of them holds an inf or NaN; Step unscales if that was
// not done yet and runs the optimizer step only when all gradients are
// finite (otherwise the step is skipped). Update then multiplies the scale by
// `backoff_factor` after a skipped step (and restarts the growth count), or
// by `growth_factor` after `growth_interval` finite steps in a row.
//
// A disabled scaler (enabled = false) is the identity: Scale returns the
// loss, Unscale does nothing, Step always steps, Update does nothing.
// Gradients must already be reduced over ranks before Unscale, so that every
// rank finds the same inf/NaN and takes the same decision. Not thread-safe.

#ifndef OCLIP_TRAINING_GRAD_SCALER_H_
#define OCLIP_TRAINING_GRAD_SCALER_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace oclip {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;
};

// What a checkpoint keeps of a scaler (OpenCLIP saves scaler.state_dict()).
struct GradScalerState {
  double scale = 65536.0;
  int64_t growth_tracker = 0;  // finite steps since the last change
};

class GradScaler {
 public:
  explicit GradScaler(const GradScalerOptions& options = {});

  bool enabled() const { return options_.enabled; }
  double scale() const { return scale_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  GradScalerState state() const { return {scale_, growth_tracker_}; }
  void set_state(const GradScalerState& state);

  // loss · scale (in the loss's dtype).
  torch::Tensor Scale(const torch::Tensor& loss) const;
  // Divides the gradients of `parameters` by the scale, once per step; notes
  // whether any is not finite.
  void Unscale(const std::vector<torch::Tensor>& parameters);
  // Unscales if needed; runs `optimizer_step` unless a gradient is inf/NaN.
  // Returns whether it ran.
  bool Step(const std::vector<torch::Tensor>& parameters,
            const std::function<void()>& optimizer_step);
  // Adjusts the scale after Step (see above) and readies the next step.
  void Update();

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  bool unscaled_ = false;
  bool found_inf_ = false;
};

}  // namespace oclip

#endif  // OCLIP_TRAINING_GRAD_SCALER_H_
