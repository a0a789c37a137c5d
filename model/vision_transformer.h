// OpenCLIP's VisionTransformer image tower (the seed configuration: learnable
// positional embedding, ln_pre, class-token pooling, bare `proj` matrix).
//
// forward: images float [N, 3, S, S] with S = config.image_size, normalized
// as the preprocessing does -> features [N, embed_dim] (unnormalized).
// State-dict names: conv1.weight, class_embedding, positional_embedding,
// ln_pre.*, transformer.resblocks.{i}.*, ln_post.*, proj.

#ifndef OCLIP_MODEL_VISION_TRANSFORMER_H_
#define OCLIP_MODEL_VISION_TRANSFORMER_H_

#include <torch/torch.h>

#include "model/config.h"
#include "model/layers.h"

namespace oclip {

class VisionTransformerImpl : public torch::nn::Module {
 public:
  VisionTransformerImpl(const VisionConfig& config, int64_t embed_dim,
                        Activation activation, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& images);

  Conv2d conv1;
  torch::Tensor class_embedding;       // [width]
  torch::Tensor positional_embedding;  // [grid^2 + 1, width]
  LayerNorm ln_pre;
  Transformer transformer;
  LayerNorm ln_post;
  torch::Tensor proj;  // [width, embed_dim]
};
TORCH_MODULE(VisionTransformer);

}  // namespace oclip

#endif  // OCLIP_MODEL_VISION_TRANSFORMER_H_
