// The building blocks shared by every tower: Linear, LayerNorm, Conv2d,
// BatchNorm2d and Embedding with PyTorch's parameter names, multi-head
// self-attention with PyTorch's packed `in_proj_weight`, the MLP and the
// pre-LN residual block of OpenCLIP's transformers.
//
// Why not torch::nn's modules: those allocate and initialise their weights on
// the CPU in their constructors. Here every parameter is allocated with the
// caller's TensorOptions and left uninitialised (loading or init.h fills it),
// so a 1.4B-parameter model can be built on the meta device to check its
// shapes, and a checkpoint is never preceded by a pointless random init.
//
// Tensors are batch-first: [N, L, D]. Modules are not thread-safe to mutate;
// forward() on a module in eval mode under InferenceMode may run concurrently.
//
// Inference kernels: Linear, Conv2d and MultiheadAttention's in_proj can carry
// a PackedKernel (weights converted once into oneDNN/bf16/int8 form by
// model/inference_precision.h). It runs only under InferenceMode; with
// autograd on (training) the plain weights and the original math run, so the
// training path is unchanged. A BatchNorm2d folded into its convolution's
// kernel is skipped under InferenceMode for the same reason.

#ifndef OCLIP_MODEL_LAYERS_H_
#define OCLIP_MODEL_LAYERS_H_

#include <torch/torch.h>

#include <optional>

#include "model/cpu_attention.h"

namespace oclip {

enum class Activation { kGelu, kQuickGelu, kRelu };

torch::Tensor Activate(Activation activation, const torch::Tensor& x);

// What may follow a Linear or convolution and be folded into its kernel's
// output write: out = residual + Activate(activation, y) (the transformer's
// x + mlp(x)), or out = Activate(activation, y + residual) where
// activation_after_residual (the ResNet's relu(conv(x) + identity)); each
// part optional.
struct LinearEpilogue {
  std::optional<Activation> activation;
  torch::Tensor residual;  // y's shape, or undefined
  bool activation_after_residual = false;
};

class LayerNormImpl;

// A layer's weights prepared for inference, and the GEMM/convolution that uses
// them: Run(x) returns what the layer's plain forward would, in x's dtype.
// RunFused(x, epilogue) returns residual + Activate(activation, Run(x)), and
// RunNormalizedFused(x, ln, epilogue) returns RunFused(ln(x), epilogue); the
// defaults compute exactly that, a kernel that can apply the epilogue while it
// writes its output, or the LayerNorm while it reads its input (the AMX int8
// Linear), overrides them. Immutable once built; the Run methods may be called
// concurrently.
class PackedKernel {
 public:
  virtual ~PackedKernel() = default;
  virtual torch::Tensor Run(const torch::Tensor& x) const = 0;
  virtual torch::Tensor RunFused(const torch::Tensor& x, const LinearEpilogue& epilogue) const;
  virtual torch::Tensor RunNormalizedFused(const torch::Tensor& x, LayerNormImpl& ln,
                                           const LinearEpilogue& epilogue) const;
};

// True when a layer should use its PackedKernel: one is installed and autograd
// is off for good (InferenceMode), so no gradient can be wanted.
inline bool UsePacked(const std::shared_ptr<const PackedKernel>& packed) {
  return packed != nullptr && c10::InferenceMode::is_enabled();
}

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias,
             const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined
  std::shared_ptr<const PackedKernel> packed;  // inference only, or null
};
TORCH_MODULE(Linear);

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;
  torch::Tensor bias;
  double eps;
};
TORCH_MODULE(LayerNorm);

class BatchNorm2dImpl;

class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel,
             int64_t stride, int64_t padding, bool bias,
             const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  // relu(bn(forward(x)) + residual) (residual undefined: none), the ResNet's
  // convolution, normalization and activation. Under InferenceMode, with bn
  // folded into the packed kernel, that kernel applies the rest as it writes.
  torch::Tensor ForwardNormRelu(const torch::Tensor& x, BatchNorm2dImpl& bn,
                                const torch::Tensor& residual = {});

  torch::Tensor weight;  // [out, in, k, k]
  torch::Tensor bias;
  int64_t stride;
  int64_t padding;
  std::shared_ptr<const PackedKernel> packed;  // inference only, or null
};
TORCH_MODULE(Conv2d);

// Eval mode uses the running statistics; train mode uses batch statistics and
// updates the running ones (momentum 0.1), as torch.nn.BatchNorm2d.
class BatchNorm2dImpl : public torch::nn::Module {
 public:
  BatchNorm2dImpl(int64_t channels, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor weight;
  torch::Tensor bias;
  torch::Tensor running_mean;
  torch::Tensor running_var;
  torch::Tensor num_batches_tracked;  // int64 scalar
  // Set when the preceding convolution's PackedKernel applies this
  // normalization (eval statistics folded into its weights and bias).
  bool folded_into_conv = false;
};
TORCH_MODULE(BatchNorm2d);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim,
                const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids);

  torch::Tensor weight;  // [num_embeddings, dim]
};
TORCH_MODULE(Embedding);

// torch.nn.MultiheadAttention's parameters (in_proj_weight [3D, D] = [q; k; v],
// in_proj_bias, out_proj) and math, self-attention only, batch-first.
class MultiheadAttentionImpl : public torch::nn::Module {
 public:
  MultiheadAttentionImpl(int64_t dim, int64_t heads,
                         const torch::TensorOptions& options);
  // x [N, L, D]; attn_mask additive [L, L] or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& attn_mask);
  // x + forward(ln(x), attn_mask), the residual block's first half. Under
  // InferenceMode the packed kernels fold ln into in_proj's input and the
  // addition into out_proj's output.
  torch::Tensor ForwardNormPlus(LayerNormImpl& ln, const torch::Tensor& x,
                                const torch::Tensor& attn_mask);

  torch::Tensor in_proj_weight;
  torch::Tensor in_proj_bias;
  Linear out_proj;
  int64_t heads;
  std::shared_ptr<const PackedKernel> packed_in_proj;  // inference only, or null
  // What the heads' products compute in under InferenceMode (set by
  // PrepareForInference, model/inference_precision.h).
  AttentionPrecision inference_attention = AttentionPrecision::kFp32;

 private:
  // The heads' outputs before out_proj, [N, L, D], for the input ln(x) (x
  // where ln is null).
  torch::Tensor Attend(const torch::Tensor& x, const torch::Tensor& attn_mask, LayerNormImpl* ln);
};
TORCH_MODULE(MultiheadAttention);

// c_fc -> activation -> c_proj.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, Activation activation,
          const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  // x + forward(ln(x)), the residual block's second half. Under
  // InferenceMode the packed kernels fold ln into c_fc's input and the
  // addition into c_proj's output.
  torch::Tensor ForwardNormPlus(LayerNormImpl& ln, const torch::Tensor& x);

  Linear c_fc;
  Linear c_proj;
  Activation activation;

 private:
  // Activate(activation, c_fc(ln(x))) (x where ln is null), the LayerNorm
  // and the activation folded into c_fc's packed kernel under InferenceMode.
  torch::Tensor Hidden(const torch::Tensor& x, LayerNormImpl* ln);
};
TORCH_MODULE(Mlp);

// x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class ResidualAttentionBlockImpl : public torch::nn::Module {
 public:
  ResidualAttentionBlockImpl(int64_t dim, int64_t heads, int64_t mlp_width,
                             Activation activation,
                             const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& attn_mask);

  LayerNorm ln_1;
  MultiheadAttention attn;
  LayerNorm ln_2;
  Mlp mlp;
};
TORCH_MODULE(ResidualAttentionBlock);

// `resblocks.{i}`. With grad checkpointing on (OpenCLIP's
// set_grad_checkpointing), each block runs under CheckpointedForward
// (model/grad_checkpointing.h) while gradients are recorded; evaluation and
// inference run the blocks directly either way.
class TransformerImpl : public torch::nn::Module {
 public:
  TransformerImpl(int64_t dim, int64_t layers, int64_t heads, int64_t mlp_width,
                  Activation activation, const torch::TensorOptions& options);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& attn_mask);

  void set_grad_checkpointing(bool enable) { grad_checkpointing_ = enable; }
  bool grad_checkpointing() const { return grad_checkpointing_; }

  std::vector<ResidualAttentionBlock> blocks;

 private:
  torch::nn::ModuleList resblocks_;
  bool grad_checkpointing_ = false;
};
TORCH_MODULE(Transformer);

}  // namespace oclip

#endif  // OCLIP_MODEL_LAYERS_H_
