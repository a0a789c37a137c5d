#include "model/layers.h"

#include "model/grad_checkpointing.h"
#include "model/torch_compat.h"

namespace oclip {

torch::Tensor Activate(Activation activation, const torch::Tensor& x) {
  switch (activation) {
    case Activation::kGelu:
      return torch::gelu(x);  // Exact (erf) GELU, nn.GELU()'s default.
    case Activation::kQuickGelu:
      if (c10::InferenceMode::is_enabled()) {
        // The same arithmetic in one buffer instead of three (no autograd
        // history to keep): the MLP's widest activation, 4x the width.
        torch::Tensor y = x * 1.702;
        y.sigmoid_();
        return y.mul_(x);
      }
      return x * torch::sigmoid(1.702 * x);
    case Activation::kRelu:
      return torch::relu(x);
  }
  return x;
}

torch::Tensor PackedKernel::RunFused(const torch::Tensor& x,
                                     const LinearEpilogue& epilogue) const {
  torch::Tensor y = Run(x);
  if (epilogue.activation_after_residual && epilogue.residual.defined()) {
    y = y + epilogue.residual;
  }
  if (epilogue.activation.has_value()) y = Activate(*epilogue.activation, y);
  if (!epilogue.activation_after_residual && epilogue.residual.defined()) {
    y = epilogue.residual + y;
  }
  return y;
}

torch::Tensor PackedKernel::RunNormalizedFused(const torch::Tensor& x, LayerNormImpl& ln,
                                               const LinearEpilogue& epilogue) const {
  return RunFused(ln.forward(x), epilogue);
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias,
                       const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}, options));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_features}, options));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (UsePacked(packed)) return packed->Run(x);
  return torch::linear(x, weight, bias);
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps_value,
                             const torch::TensorOptions& options)
    : eps(eps_value) {
  weight = register_parameter("weight", torch::empty({dim}, options));
  bias = register_parameter("bias", torch::empty({dim}, options));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  if (x.scalar_type() != weight.scalar_type()) {
    // Under CPU autocast (amp_bf16 training) activations arrive in bf16 while
    // the weights stay fp32, and LibTorch 1.13's CPU autocast leaves
    // layer_norm to the kernel, which refuses mixed dtypes. Normalize in the
    // weights' precision and return the input's, as OpenCLIP's LayerNorm does.
    return torch::layer_norm(x.to(weight.scalar_type()), {weight.size(0)}, weight, bias, eps)
        .to(x.scalar_type());
  }
  return torch::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

Conv2dImpl::Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel,
                       int64_t stride_value, int64_t padding_value, bool with_bias,
                       const torch::TensorOptions& options)
    : stride(stride_value), padding(padding_value) {
  weight = register_parameter(
      "weight", torch::empty({out_channels, in_channels, kernel, kernel}, options));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_channels}, options));
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  if (UsePacked(packed)) return packed->Run(x);
  return torch::conv2d(x, weight, bias, stride, padding);
}

torch::Tensor Conv2dImpl::ForwardNormRelu(const torch::Tensor& x, BatchNorm2dImpl& bn,
                                          const torch::Tensor& residual) {
  if (UsePacked(packed) && bn.folded_into_conv) {
    return packed->RunFused(x, {Activation::kRelu, residual, /*activation_after_residual=*/true});
  }
  torch::Tensor y = bn.forward(forward(x));
  if (residual.defined()) y = y + residual;
  return torch::relu(y);
}

BatchNorm2dImpl::BatchNorm2dImpl(int64_t channels, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({channels}, options));
  bias = register_parameter("bias", torch::empty({channels}, options));
  running_mean = register_buffer("running_mean", torch::empty({channels}, options));
  running_var = register_buffer("running_var", torch::empty({channels}, options));
  num_batches_tracked =
      register_buffer("num_batches_tracked", torch::empty({}, options.dtype(torch::kLong)));
}

torch::Tensor BatchNorm2dImpl::forward(const torch::Tensor& x) {
  if (folded_into_conv && c10::InferenceMode::is_enabled()) return x;
  if (is_training()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
  }
  return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(),
                           /*momentum=*/0.1, /*eps=*/1e-5, /*cudnn_enabled=*/true);
}

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t dim,
                             const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({num_embeddings, dim}, options));
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return torch::embedding(weight, ids);
}

MultiheadAttentionImpl::MultiheadAttentionImpl(int64_t dim, int64_t heads_value,
                                               const torch::TensorOptions& options)
    : out_proj(dim, dim, /*bias=*/true, options), heads(heads_value) {
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * dim, dim}, options));
  in_proj_bias = register_parameter("in_proj_bias", torch::empty({3 * dim}, options));
  register_module("out_proj", out_proj);
}

torch::Tensor MultiheadAttentionImpl::forward(const torch::Tensor& x,
                                              const torch::Tensor& attn_mask) {
  return out_proj(Attend(x, attn_mask, nullptr));
}

torch::Tensor MultiheadAttentionImpl::ForwardNormPlus(LayerNormImpl& ln, const torch::Tensor& x,
                                                      const torch::Tensor& attn_mask) {
  const torch::Tensor attended = Attend(x, attn_mask, &ln);
  if (UsePacked(out_proj->packed)) return out_proj->packed->RunFused(attended, {std::nullopt, x});
  return x + out_proj(attended);
}

torch::Tensor MultiheadAttentionImpl::Attend(const torch::Tensor& x,
                                             const torch::Tensor& attn_mask, LayerNormImpl* ln) {
  const int64_t n = x.size(0), l = x.size(1), d = x.size(2);
  // One GEMM for q, k and v, then [N, L, 3, H, Dh] -> three [N, H, L, Dh].
  torch::Tensor qkv;
  if (UsePacked(packed_in_proj)) {
    qkv = ln != nullptr ? packed_in_proj->RunNormalizedFused(x, *ln, {}) : packed_in_proj->Run(x);
  } else {
    qkv = torch::linear(ln != nullptr ? ln->forward(x) : x, in_proj_weight, in_proj_bias);
  }
  qkv = qkv.view({n, l, 3, heads, d / heads}).permute({2, 0, 3, 1, 4});
  torch::Tensor out =
      ScaledDotProductAttention(qkv[0], qkv[1], qkv[2], attn_mask, inference_attention);
  return out.transpose(1, 2).reshape({n, l, d});
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, Activation activation_value,
                 const torch::TensorOptions& options)
    : c_fc(dim, hidden, /*bias=*/true, options),
      c_proj(hidden, dim, /*bias=*/true, options),
      activation(activation_value) {
  register_module("c_fc", c_fc);
  register_module("c_proj", c_proj);
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) { return c_proj(Hidden(x, nullptr)); }

torch::Tensor MlpImpl::ForwardNormPlus(LayerNormImpl& ln, const torch::Tensor& x) {
  const torch::Tensor hidden = Hidden(x, &ln);
  if (UsePacked(c_proj->packed)) return c_proj->packed->RunFused(hidden, {std::nullopt, x});
  return x + c_proj(hidden);
}

torch::Tensor MlpImpl::Hidden(const torch::Tensor& x, LayerNormImpl* ln) {
  if (UsePacked(c_fc->packed)) {
    const LinearEpilogue epilogue{activation, torch::Tensor()};
    return ln != nullptr ? c_fc->packed->RunNormalizedFused(x, *ln, epilogue)
                         : c_fc->packed->RunFused(x, epilogue);
  }
  return Activate(activation, c_fc(ln != nullptr ? ln->forward(x) : x));
}

ResidualAttentionBlockImpl::ResidualAttentionBlockImpl(
    int64_t dim, int64_t heads, int64_t mlp_width, Activation activation,
    const torch::TensorOptions& options)
    : ln_1(dim, 1e-5, options),
      attn(dim, heads, options),
      ln_2(dim, 1e-5, options),
      mlp(dim, mlp_width, activation, options) {
  register_module("ln_1", ln_1);
  register_module("attn", attn);
  register_module("ln_2", ln_2);
  register_module("mlp", mlp);
}

torch::Tensor ResidualAttentionBlockImpl::forward(const torch::Tensor& x,
                                                  const torch::Tensor& attn_mask) {
  // x + attn(ln_1(x)), then h + mlp(ln_2(h)). Under InferenceMode with packed
  // kernels, in_proj and c_fc apply the LayerNorm as they quantize their
  // input and out_proj and c_proj add the residual as they write their
  // output; otherwise (training) the plain ops run, autograd included.
  torch::Tensor h = attn->ForwardNormPlus(*ln_1, x, attn_mask);
  return mlp->ForwardNormPlus(*ln_2, h);
}

TransformerImpl::TransformerImpl(int64_t dim, int64_t layers, int64_t heads,
                                 int64_t mlp_width, Activation activation,
                                 const torch::TensorOptions& options) {
  resblocks_ = register_module("resblocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < layers; ++i) {
    blocks.emplace_back(dim, heads, mlp_width, activation, options);
    resblocks_->push_back(blocks.back());
  }
}

torch::Tensor TransformerImpl::forward(torch::Tensor x, const torch::Tensor& attn_mask) {
  const bool checkpoint = grad_checkpointing_ && UseGradCheckpointing();
  for (auto& block : blocks) {
    if (checkpoint) {
      x = CheckpointedForward(
          [impl = block.ptr(), attn_mask](const torch::Tensor& in) {
            return impl->forward(in, attn_mask);
          },
          x, block->parameters());
    } else {
      x = block(x, attn_mask);
    }
  }
  return x;
}

}  // namespace oclip
