#include "model/grad_checkpointing.h"

#include <ATen/autocast_mode.h>

#include <mutex>
#include <utility>

namespace oclip {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the backward pass needs besides x: the function, the tensors to
// differentiate, and the forward's autocast and RNG state. Travels in the
// autograd context as an IValue capsule.
struct CheckpointedCall : torch::CustomClassHolder {
  CheckpointedFunction fn;
  std::vector<torch::Tensor> parameters;  // all require grad
  bool cpu_autocast = false;
  torch::ScalarType cpu_autocast_dtype = torch::kBFloat16;
  bool gpu_autocast = false;
  torch::ScalarType gpu_autocast_dtype = torch::kHalf;
  // Generator states at the forward (CPU, and x's device when it is not the CPU).
  std::vector<std::pair<torch::Device, torch::Tensor>> rng_states;
};

torch::Tensor GetRngState(const torch::Device& device) {
  at::Generator generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void SetRngState(const torch::Device& device, const torch::Tensor& state) {
  at::Generator generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// The forward's autocast state for the recomputation; the caller's is
// restored afterwards (backward usually runs outside any autocast scope).
class ReplayAutocast {
 public:
  explicit ReplayAutocast(const CheckpointedCall& call)
      : cpu_(at::autocast::is_cpu_enabled()),
        cpu_dtype_(at::autocast::get_autocast_cpu_dtype()),
        gpu_(at::autocast::is_enabled()),
        gpu_dtype_(at::autocast::get_autocast_gpu_dtype()) {
    at::autocast::set_cpu_enabled(call.cpu_autocast);
    at::autocast::set_autocast_cpu_dtype(call.cpu_autocast_dtype);
    at::autocast::set_enabled(call.gpu_autocast);
    at::autocast::set_autocast_gpu_dtype(call.gpu_autocast_dtype);
    at::autocast::increment_nesting();
  }
  ~ReplayAutocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(cpu_);
    at::autocast::set_autocast_cpu_dtype(cpu_dtype_);
    at::autocast::set_enabled(gpu_);
    at::autocast::set_autocast_gpu_dtype(gpu_dtype_);
  }
  ReplayAutocast(const ReplayAutocast&) = delete;
  ReplayAutocast& operator=(const ReplayAutocast&) = delete;

 private:
  bool cpu_;
  torch::ScalarType cpu_dtype_;
  bool gpu_;
  torch::ScalarType gpu_dtype_;
};

// torch.random.fork_rng: the forward's generator states for the
// recomputation, the current ones back afterwards.
class ReplayRng {
 public:
  explicit ReplayRng(const CheckpointedCall& call) {
    for (const auto& [device, state] : call.rng_states) {
      current_.emplace_back(device, GetRngState(device));
      SetRngState(device, state);
    }
  }
  ~ReplayRng() {
    for (const auto& [device, state] : current_) SetRngState(device, state);
  }
  ReplayRng(const ReplayRng&) = delete;
  ReplayRng& operator=(const ReplayRng&) = delete;

 private:
  std::vector<std::pair<torch::Device, torch::Tensor>> current_;
};

class NoAutocastCache {
 public:
  NoAutocastCache() : previous_(at::autocast::is_autocast_cache_enabled()) {
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~NoAutocastCache() { at::autocast::set_autocast_cache_enabled(previous_); }
  NoAutocastCache(const NoAutocastCache&) = delete;
  NoAutocastCache& operator=(const NoAutocastCache&) = delete;

 private:
  bool previous_;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // Runs with grad mode off (Function::apply disables it). `parameters` is
  // passed as a TensorList so that each one is an input of this node: the
  // engine then routes the gradients returned for them into `.grad`.
  static torch::Tensor forward(AutogradContext* ctx, const c10::IValue& capsule,
                               const torch::Tensor& x, at::TensorList parameters) {
    (void)parameters;  // Also in the capsule; here only to make graph edges.
    const auto* call = static_cast<const CheckpointedCall*>(capsule.toCapsule().get());
    // Autocast caches the low-precision copies of weights that require grad
    // for the rest of its scope; made here without grad, such a copy would
    // cut the gradient of any later, un-checkpointed use of the same weight.
    torch::Tensor y;
    {
      NoAutocastCache no_cache;
      y = call->fn(x);
    }
    ctx->save_for_backward({x});
    ctx->saved_data["call"] = capsule;
    ctx->saved_data["x_requires_grad"] = x.requires_grad();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const c10::intrusive_ptr<torch::CustomClassHolder> holder =
        ctx->saved_data["call"].toCapsule();
    const auto& call = *static_cast<const CheckpointedCall*>(holder.get());
    const bool x_requires_grad = ctx->saved_data["x_requires_grad"].toBool();
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(x_requires_grad);
    torch::Tensor y;
    {
      torch::AutoGradMode grad_mode(true);
      ReplayAutocast autocast(call);
      ReplayRng rng(call);
      y = call.fn(x);
    }
    variable_list inputs;
    if (x_requires_grad) inputs.push_back(x);
    inputs.insert(inputs.end(), call.parameters.begin(), call.parameters.end());
    variable_list grads = torch::autograd::grad({y}, inputs, {grad_outputs[0]},
                                                /*retain_graph=*/false, /*create_graph=*/false,
                                                /*allow_unused=*/true);
    // One entry per forward argument: the capsule, x, then each parameter.
    variable_list result;
    result.reserve(2 + call.parameters.size());
    result.emplace_back();
    result.push_back(x_requires_grad ? grads[0] : torch::Tensor());
    result.insert(result.end(), grads.begin() + (x_requires_grad ? 1 : 0), grads.end());
    return result;
  }
};

}  // namespace

bool UseGradCheckpointing() {
  return torch::GradMode::is_enabled() && !c10::InferenceMode::is_enabled();
}

torch::Tensor CheckpointedForward(CheckpointedFunction fn, const torch::Tensor& x,
                                  const std::vector<torch::Tensor>& parameters) {
  auto call = c10::make_intrusive<CheckpointedCall>();
  for (const torch::Tensor& p : parameters) {
    if (p.requires_grad()) call->parameters.push_back(p);
  }
  if (!x.requires_grad() && call->parameters.empty()) return fn(x);  // Nothing to recompute for.
  call->fn = std::move(fn);
  call->cpu_autocast = at::autocast::is_cpu_enabled();
  call->cpu_autocast_dtype = at::autocast::get_autocast_cpu_dtype();
  call->gpu_autocast = at::autocast::is_enabled();
  call->gpu_autocast_dtype = at::autocast::get_autocast_gpu_dtype();
  call->rng_states.emplace_back(torch::kCPU, GetRngState(torch::kCPU));
  if (!x.device().is_cpu()) call->rng_states.emplace_back(x.device(), GetRngState(x.device()));
  const std::vector<torch::Tensor> edges = call->parameters;
  return CheckpointFunction::apply(
      c10::IValue::make_capsule(c10::intrusive_ptr<torch::CustomClassHolder>(std::move(call))),
      x, at::TensorList(edges));
}

}  // namespace oclip
