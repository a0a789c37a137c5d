#include "training/clip_loss.h"

#include <cstdint>

namespace oclip {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor tensor,
                               int64_t communicator_address) {
    auto* communicator = reinterpret_cast<Communicator*>(communicator_address);
    ctx->saved_data["communicator"] = communicator_address;
    ctx->saved_data["rows"] = tensor.size(0);
    return torch::cat(communicator->AllGather(tensor.contiguous()), 0);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto* communicator = reinterpret_cast<Communicator*>(ctx->saved_data["communicator"].toInt());
    const int64_t rows = ctx->saved_data["rows"].toInt();
    std::vector<torch::Tensor> grad = {grad_outputs[0].contiguous().clone()};
    communicator->AllReduceSum(grad);
    return {grad[0].narrow(0, rows * communicator->rank(), rows), torch::Tensor()};
  }
};

// The gathered [N, D] features without autograd; with `reinsert_local` this
// rank's slot is the local tensor itself so that its gradient flows.
torch::Tensor GatherNoGrad(const torch::Tensor& local, Communicator& communicator,
                           bool reinsert_local) {
  std::vector<torch::Tensor> parts;
  {
    torch::NoGradGuard no_grad;
    parts = communicator.AllGather(local.detach().contiguous());
  }
  if (reinsert_local) parts[communicator.rank()] = local;
  return torch::cat(parts, 0);
}

}  // namespace

torch::Tensor AllGatherWithGrad(const torch::Tensor& tensor, Communicator& communicator) {
  return AllGatherFunction::apply(tensor, reinterpret_cast<int64_t>(&communicator));
}

torch::Tensor ClipLoss(const torch::Tensor& image_features, const torch::Tensor& text_features,
                       const torch::Tensor& logit_scale, const ClipLossOptions& options,
                       Communicator* communicator) {
  namespace F = torch::nn::functional;
  torch::Tensor logits_per_image, logits_per_text;
  int64_t label_offset = 0;
  if (communicator != nullptr && communicator->world_size() > 1) {
    torch::Tensor all_image, all_text;
    if (options.gather_with_grad) {
      all_image = AllGatherWithGrad(image_features, *communicator);
      all_text = AllGatherWithGrad(text_features, *communicator);
    } else {
      all_image = GatherNoGrad(image_features, *communicator, !options.local_loss);
      all_text = GatherNoGrad(text_features, *communicator, !options.local_loss);
    }
    if (options.local_loss) {
      logits_per_image = logit_scale * torch::matmul(image_features, all_text.t());
      logits_per_text = logit_scale * torch::matmul(text_features, all_image.t());
      label_offset = image_features.size(0) * communicator->rank();
    } else {
      logits_per_image = logit_scale * torch::matmul(all_image, all_text.t());
      logits_per_text = logits_per_image.t();
    }
  } else {
    logits_per_image = logit_scale * torch::matmul(image_features, text_features.t());
    logits_per_text = logit_scale * torch::matmul(text_features, image_features.t());
  }
  const torch::Tensor labels =
      torch::arange(logits_per_image.size(0),
                    torch::TensorOptions().dtype(torch::kLong).device(logits_per_image.device())) +
      label_offset;
  return (F::cross_entropy(logits_per_image, labels) + F::cross_entropy(logits_per_text, labels)) /
         2;
}

}  // namespace oclip
