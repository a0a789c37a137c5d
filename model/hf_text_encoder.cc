#include "model/hf_text_encoder.h"

#include <limits>
#include <string>

#include "model/grad_checkpointing.h"
#include "model/torch_compat.h"

namespace oclip {
namespace {

// A module without parameters of its own that only gives its children a name
// prefix (HF's attention.self, attention.output, ...).
class ScopeImpl : public torch::nn::Module {};
TORCH_MODULE(Scope);

}  // namespace

RobertaEmbeddingsImpl::RobertaEmbeddingsImpl(const HfTextConfig& config,
                                             const torch::TensorOptions& options)
    : word_embeddings(config.vocab_size, config.hidden_size, options),
      position_embeddings(config.max_position_embeddings, config.hidden_size, options),
      token_type_embeddings(config.type_vocab_size, config.hidden_size, options),
      LayerNorm_(config.hidden_size, config.layer_norm_eps, options),
      pad_token_id(config.pad_token_id) {
  register_module("word_embeddings", word_embeddings);
  register_module("position_embeddings", position_embeddings);
  register_module("token_type_embeddings", token_type_embeddings);
  register_module("LayerNorm", LayerNorm_);
}

torch::Tensor RobertaEmbeddingsImpl::forward(const torch::Tensor& ids,
                                             const torch::Tensor& mask) {
  // RoBERTa numbers positions from padding_idx + 1 over non-pad tokens; pads
  // get padding_idx.
  torch::Tensor mask_long = mask.to(torch::kLong);
  torch::Tensor positions = torch::cumsum(mask_long, 1) * mask_long + pad_token_id;
  torch::Tensor x = word_embeddings(ids) + position_embeddings(positions) +
                    token_type_embeddings->weight[0];  // token_type_ids are all 0.
  return LayerNorm_(x);
}

RobertaLayerImpl::RobertaLayerImpl(const HfTextConfig& config,
                                   const torch::TensorOptions& options)
    : query(config.hidden_size, config.hidden_size, true, options),
      key(config.hidden_size, config.hidden_size, true, options),
      value(config.hidden_size, config.hidden_size, true, options),
      attention_dense(config.hidden_size, config.hidden_size, true, options),
      intermediate_dense(config.hidden_size, config.intermediate_size, true, options),
      output_dense(config.intermediate_size, config.hidden_size, true, options),
      attention_norm(config.hidden_size, config.layer_norm_eps, options),
      output_norm(config.hidden_size, config.layer_norm_eps, options),
      heads(config.num_attention_heads) {
  auto attention = register_module("attention", Scope());
  auto self = attention->register_module("self", Scope());
  self->register_module("query", query);
  self->register_module("key", key);
  self->register_module("value", value);
  auto attention_output = attention->register_module("output", Scope());
  attention_output->register_module("dense", attention_dense);
  attention_output->register_module("LayerNorm", attention_norm);
  register_module("intermediate", Scope())->register_module("dense", intermediate_dense);
  auto output = register_module("output", Scope());
  output->register_module("dense", output_dense);
  output->register_module("LayerNorm", output_norm);
}

torch::Tensor RobertaLayerImpl::forward(const torch::Tensor& x,
                                        const torch::Tensor& additive_mask) {
  const int64_t n = x.size(0), l = x.size(1), d = x.size(2), dh = d / heads;
  auto split = [&](const torch::Tensor& t) {
    return t.view({n, l, heads, dh}).transpose(1, 2);
  };
  torch::Tensor context =
      ScaledDotProductAttention(split(query(x)), split(key(x)), split(value(x)), additive_mask);
  torch::Tensor attended =
      attention_norm(attention_dense(context.transpose(1, 2).reshape({n, l, d})) + x);
  torch::Tensor hidden = torch::gelu(intermediate_dense(attended));
  return output_norm(output_dense(hidden) + attended);
}

RobertaModelImpl::RobertaModelImpl(const HfTextConfig& config,
                                   const torch::TensorOptions& options)
    : embeddings(config, options) {
  register_module("embeddings", embeddings);
  auto layer_list =
      register_module("encoder", Scope())->register_module("layer", torch::nn::ModuleList());
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    layers.emplace_back(config, options);
    layer_list->push_back(layers.back());
  }
}

torch::Tensor RobertaModelImpl::forward(const torch::Tensor& ids, const torch::Tensor& mask) {
  torch::Tensor x = embeddings(ids, mask);
  // HF's extended attention mask: (1 - mask) * finfo.min, broadcast over heads
  // and queries.
  torch::Tensor additive =
      (1.0 - mask.to(x.dtype())).mul(std::numeric_limits<float>::lowest()).view(
          {mask.size(0), 1, 1, mask.size(1)});
  const bool checkpoint = grad_checkpointing_ && UseGradCheckpointing();
  for (auto& layer : layers) {
    if (checkpoint) {
      x = CheckpointedForward(
          [impl = layer.ptr(), additive](const torch::Tensor& in) {
            return impl->forward(in, additive);
          },
          x, layer->parameters());
    } else {
      x = layer(x, additive);
    }
  }
  return x;
}

HfTextEncoderImpl::HfTextEncoderImpl(const TextConfig& config, int64_t embed_dim,
                                     const torch::TensorOptions& options)
    : transformer(*config.hf, options), pad_token_id(config.hf->pad_token_id) {
  register_module("transformer", transformer);
  const int64_t hidden = config.hf->hidden_size;
  if (config.hf_proj_type == "linear") {
    proj_in = register_module("proj", Linear(hidden, embed_dim, false, options));
  } else {
    const int64_t mid = (hidden + embed_dim) / 2;
    auto proj = register_module("proj", Scope());
    proj_in = proj->register_module("0", Linear(hidden, mid, false, options));
    proj_out = proj->register_module("2", Linear(mid, embed_dim, false, options));
  }
}

torch::Tensor HfTextEncoderImpl::forward(const torch::Tensor& ids) {
  // Columns after the last one holding a real token in any row are padding in
  // every row, which attention and the pool mask out (and the positions count
  // real tokens only): they are not computed, as in the native text tower.
  const torch::Tensor real_columns = ids.ne(pad_token_id).any(0).nonzero();
  const int64_t length =
      real_columns.numel() == 0 ? ids.size(1) : real_columns.max().item<int64_t>() + 1;
  const torch::Tensor used = ids.slice(1, 0, length);
  torch::Tensor mask = used.ne(pad_token_id);
  torch::Tensor hidden = transformer(used, mask);
  // Mean over non-pad tokens (specials included), OpenCLIP's MeanPooler.
  torch::Tensor m = mask.unsqueeze(-1).to(hidden.dtype());
  torch::Tensor pooled = (hidden * m).sum(1) / m.sum(1);
  if (!proj_out) return proj_in(pooled);
  return proj_out(torch::gelu(proj_in(pooled)));
}

}  // namespace oclip
