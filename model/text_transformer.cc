#include "model/text_transformer.h"

#include <limits>

namespace oclip {

TextTransformerImpl::TextTransformerImpl(const TextConfig& config, int64_t embed_dim,
                                         Activation activation,
                                         const torch::TensorOptions& options)
    : token_embedding(config.vocab_size, config.width, options),
      transformer(config.width, config.layers, config.heads, config.mlp_width(),
                  activation, options),
      ln_final(config.width, 1e-5, options) {
  register_module("token_embedding", token_embedding);
  positional_embedding = register_parameter(
      "positional_embedding", torch::empty({config.context_length, config.width}, options));
  register_module("transformer", transformer);
  register_module("ln_final", ln_final);
  text_projection =
      register_parameter("text_projection", torch::empty({config.width, embed_dim}, options));
}

torch::Tensor TextTransformerImpl::CausalMask(int64_t length,
                                              const torch::Tensor& like) const {
  // -inf strictly above the diagonal: token i attends to tokens <= i.
  return torch::full({length, length}, -std::numeric_limits<float>::infinity(),
                     like.options())
      .triu(1);
}

torch::Tensor TextTransformerImpl::forward(const torch::Tensor& tokens) {
  // Pool at the end-of-text token (the highest id; argmax takes the first).
  const torch::Tensor eot = tokens.argmax(-1);
  // Attention is causal, so no position after the batch's last end-of-text
  // token can change a pooled feature, or its gradient: those positions are
  // not computed. Captions fill ~10-20 of the 77 positions, so this is most
  // of the tower's work; the features are OpenCLIP's (which computes them all).
  const int64_t length = tokens.size(0) == 0 ? tokens.size(1) : eot.max().item<int64_t>() + 1;
  const torch::Tensor used = tokens.slice(1, 0, length);
  torch::Tensor x = token_embedding(used) +
                    positional_embedding.slice(0, 0, length).to(token_embedding->weight.dtype());
  x = transformer(x, CausalMask(length, x));
  torch::Tensor pooled = x.index({torch::arange(x.size(0), eot.options()), eot});
  return torch::matmul(ln_final(pooled), text_projection);
}

}  // namespace oclip
