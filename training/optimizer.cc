#include "training/optimizer.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace oclip {

bool ExcludedFromWeightDecay(const std::string& name, const torch::Tensor& parameter) {
  return parameter.dim() < 2 || absl::StrContains(name, "bn") || absl::StrContains(name, "ln") ||
         absl::StrContains(name, "bias") || absl::StrContains(name, "logit_scale");
}

std::vector<ParamGroup> OpenClipParamGroups(const torch::nn::Module& model, double weight_decay) {
  std::vector<ParamGroup> groups(2);
  groups[1].weight_decay = weight_decay;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    groups[ExcludedFromWeightDecay(item.key(), item.value()) ? 0 : 1].params.push_back(
        {item.key(), item.value()});
  }
  return groups;
}

std::vector<torch::Tensor> AllParameters(const std::vector<ParamGroup>& groups) {
  std::vector<torch::Tensor> all;
  for (const ParamGroup& group : groups) {
    for (const NamedParameter& p : group.params) all.push_back(p.tensor);
  }
  return all;
}

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamWOptions& options)
    : groups_(std::move(groups)), options_(options) {}

void AdamW::ZeroGrad() {
  for (const ParamGroup& group : groups_) {
    for (const NamedParameter& p : group.params) {
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().reset();
    }
  }
}

void AdamW::Step() {
  torch::NoGradGuard no_grad;
  const double lr = options_.lr, beta1 = options_.beta1, beta2 = options_.beta2;
  for (const ParamGroup& group : groups_) {
    for (const NamedParameter& p : group.params) {
      torch::Tensor param = p.tensor;
      const torch::Tensor& grad = param.grad();
      if (!grad.defined()) continue;
      ParamState& state = state_[p.name];
      if (!state.exp_avg.defined()) {
        state.exp_avg = torch::zeros_like(param, torch::MemoryFormat::Preserve);
        state.exp_avg_sq = torch::zeros_like(param, torch::MemoryFormat::Preserve);
      }
      ++state.step;
      param.mul_(1 - lr * group.weight_decay);
      state.exp_avg.mul_(beta1).add_(grad, 1 - beta1);
      state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(state.step));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(state.step));
      const torch::Tensor denom =
          (state.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options_.eps);
      param.addcdiv_(state.exp_avg, denom, -lr / bias_correction1);
    }
  }
}

std::map<std::string, torch::Tensor> AdamW::StateDict() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, state] : state_) {
    out["exp_avg/" + name] = state.exp_avg;
    out["exp_avg_sq/" + name] = state.exp_avg_sq;
    out["step/" + name] = torch::tensor(state.step, torch::kLong);
  }
  return out;
}

absl::Status AdamW::LoadStateDict(const std::map<std::string, torch::Tensor>& state) {
  std::map<std::string, const torch::Tensor*> params;
  for (const ParamGroup& group : groups_) {
    for (const NamedParameter& p : group.params) params[p.name] = &p.tensor;
  }
  std::map<std::string, ParamState> loaded;
  for (const auto& [key, value] : state) {
    const size_t slash = key.find('/');
    const std::string kind = key.substr(0, slash);
    const std::string name = slash == std::string::npos ? "" : key.substr(slash + 1);
    auto it = params.find(name);
    if (it == params.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state for unknown or frozen parameter: ", key));
    }
    const torch::Tensor& param = *it->second;
    if (kind == "step") {
      if (value.numel() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state ", key, " is not a scalar"));
      }
      loaded[name].step = value.to(torch::kLong).item<int64_t>();
    } else if (kind == "exp_avg" || kind == "exp_avg_sq") {
      if (value.sizes() != param.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state ", key, " has shape ",
                                                       c10::str(value.sizes()), ", parameter has ",
                                                       c10::str(param.sizes())));
      }
      torch::Tensor copy = value.to(param.device(), param.scalar_type()).clone();
      (kind == "exp_avg" ? loaded[name].exp_avg : loaded[name].exp_avg_sq) = copy;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown optimizer state entry: ", key));
    }
  }
  for (const auto& [name, s] : loaded) {
    if (!s.exp_avg.defined() || !s.exp_avg_sq.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state for ", name, " lacks exp_avg or exp_avg_sq"));
    }
  }
  state_ = std::move(loaded);
  return absl::OkStatus();
}

double GradNorm(const std::vector<torch::Tensor>& parameters) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const torch::Tensor& p : parameters) {
    if (p.grad().defined()) norms.push_back(p.grad().detach().to(torch::kFloat).norm(2));
  }
  if (norms.empty()) return 0;
  return torch::stack(norms).norm(2).item<double>();
}

double ClipGradNorm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  torch::NoGradGuard no_grad;
  const double norm = GradNorm(parameters);
  const double coefficient = std::min(1.0, max_norm / (norm + 1e-6));
  if (coefficient < 1.0) {
    for (const torch::Tensor& p : parameters) {
      if (p.grad().defined()) p.grad().mul_(coefficient);
    }
  }
  return norm;
}

void ClampLogitScale(torch::Tensor& logit_scale) {
  torch::NoGradGuard no_grad;
  logit_scale.clamp_(0, std::log(100.0));
}

}  // namespace oclip
