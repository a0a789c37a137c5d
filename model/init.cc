#include "model/init.h"

#include <cmath>
#include <string>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/match.h"

namespace oclip {
namespace {

bool IsNormParameter(const std::string& name) {
  return absl::StrContains(name, "ln_") || absl::StrContains(name, "LayerNorm") ||
         absl::StrContains(name, ".bn") || absl::StrContains(name, "downsample.1.");
}

}  // namespace

void InitializeRandom(ClipModel& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  // Sample on the CPU with the local generator, then copy to the device, so
  // the values do not depend on the device.
  auto normal = [&generator](torch::Tensor& t, double std) {
    t.copy_(torch::empty(t.sizes(), torch::kFloat).normal_(0.0, std, generator));
  };
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (name == "logit_scale") {
      p.fill_(std::log(1.0 / 0.07));
    } else if (IsNormParameter(name)) {
      p.fill_(absl::EndsWith(name, ".weight") ? 1.0 : 0.0);
    } else if (absl::EndsWith(name, "bias")) {
      p.zero_();
    } else if (absl::StrContains(name, "embeddings.") || name == "token_embedding.weight") {
      normal(p, 0.02);
    } else if (name == "positional_embedding") {
      normal(p, 0.01);
    } else if (p.dim() == 1) {  // class_embedding
      normal(p, 1.0 / std::sqrt(static_cast<double>(p.size(0))));
    } else if (absl::EndsWith(name, "positional_embedding")) {  // [tokens, width]
      normal(p, 1.0 / std::sqrt(static_cast<double>(p.size(1))));
    } else if (absl::EndsWith(name, "proj") || absl::EndsWith(name, "projection")) {
      normal(p, 1.0 / std::sqrt(static_cast<double>(p.size(0))));  // Bare [width, embed].
    } else {
      normal(p, 1.0 / std::sqrt(static_cast<double>(p.numel() / p.size(0))));  // fan_in
    }
  }
  for (auto& item : model.named_buffers()) {
    const std::string& name = item.key();
    torch::Tensor& b = item.value();
    b.fill_(absl::EndsWith(name, "running_var") ? 1.0 : 0.0);
  }
}

}  // namespace oclip
