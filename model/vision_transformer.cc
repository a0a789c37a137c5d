#include "model/vision_transformer.h"

namespace oclip {

VisionTransformerImpl::VisionTransformerImpl(const VisionConfig& config,
                                             int64_t embed_dim, Activation activation,
                                             const torch::TensorOptions& options)
    : conv1(3, config.width, config.patch_size, config.patch_size, /*padding=*/0,
            /*bias=*/false, options),
      ln_pre(config.width, 1e-5, options),
      transformer(config.width, config.layers, config.heads(), config.mlp_width(),
                  activation, options),
      ln_post(config.width, 1e-5, options) {
  const int64_t grid = config.grid_size();
  register_module("conv1", conv1);
  class_embedding = register_parameter("class_embedding", torch::empty({config.width}, options));
  positional_embedding = register_parameter(
      "positional_embedding", torch::empty({grid * grid + 1, config.width}, options));
  register_module("ln_pre", ln_pre);
  register_module("transformer", transformer);
  register_module("ln_post", ln_post);
  proj = register_parameter("proj", torch::empty({config.width, embed_dim}, options));
}

torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& images) {
  // [N, W, g, g] -> [N, g*g, W], row-major over the grid as OpenCLIP flattens.
  torch::Tensor x = conv1(images).flatten(2).transpose(1, 2);
  torch::Tensor cls = class_embedding.to(x.dtype()).expand({x.size(0), 1, x.size(2)});
  x = torch::cat({cls, x}, 1) + positional_embedding.to(x.dtype());
  x = transformer(ln_pre(x), /*attn_mask=*/torch::Tensor());
  // Only the class token is pooled, so ln_post runs on it alone.
  return torch::matmul(ln_post(x.select(1, 0)), proj);
}

}  // namespace oclip
