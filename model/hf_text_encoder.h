// OpenCLIP's HFTextEncoder for the RoBERTa / XLM-RoBERTa text towers: a
// post-LN BERT encoder (Hugging Face's RobertaModel without pooling layer),
// masked mean pooling over non-pad tokens, and an MLP (or linear) projection.
//
// forward: token ids int64 [N, L] (HF tokenizer ids padded with pad_token_id)
// -> features [N, embed_dim]; columns that are padding in every row are not
// computed. State-dict names, under `text.`:
// transformer.embeddings.*, transformer.encoder.layer.{i}.*, proj.{0,2}.weight
// (mlp) or proj.weight (linear).

#ifndef OCLIP_MODEL_HF_TEXT_ENCODER_H_
#define OCLIP_MODEL_HF_TEXT_ENCODER_H_

#include <torch/torch.h>

#include "model/config.h"
#include "model/layers.h"

namespace oclip {

class RobertaEmbeddingsImpl : public torch::nn::Module {
 public:
  RobertaEmbeddingsImpl(const HfTextConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask);

  Embedding word_embeddings;
  Embedding position_embeddings;
  Embedding token_type_embeddings;
  LayerNorm LayerNorm_;  // Registered as "LayerNorm", HF's name.
  int64_t pad_token_id;
};
TORCH_MODULE(RobertaEmbeddings);

// attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
// intermediate.dense, output.{dense,LayerNorm}.
class RobertaLayerImpl : public torch::nn::Module {
 public:
  RobertaLayerImpl(const HfTextConfig& config, const torch::TensorOptions& options);
  // additive_mask: [N, 1, 1, L], 0 for tokens and a large negative for pads.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& additive_mask);

  Linear query, key, value, attention_dense, intermediate_dense, output_dense;
  LayerNorm attention_norm, output_norm;
  int64_t heads;
};
TORCH_MODULE(RobertaLayer);

class RobertaModelImpl : public torch::nn::Module {
 public:
  RobertaModelImpl(const HfTextConfig& config, const torch::TensorOptions& options);
  // -> last hidden state [N, L, hidden].
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask);

  // HF's gradient_checkpointing_enable: each layer under CheckpointedForward
  // (model/grad_checkpointing.h) while gradients are recorded.
  void set_grad_checkpointing(bool enable) { grad_checkpointing_ = enable; }

  RobertaEmbeddings embeddings;
  std::vector<RobertaLayer> layers;

 private:
  bool grad_checkpointing_ = false;
};
TORCH_MODULE(RobertaModel);

class HfTextEncoderImpl : public torch::nn::Module {
 public:
  HfTextEncoderImpl(const TextConfig& config, int64_t embed_dim,
                    const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids);

  RobertaModel transformer;
  Linear proj_in{nullptr};   // mlp: proj.0; linear: proj
  Linear proj_out{nullptr};  // mlp: proj.2
  int64_t pad_token_id;
};
TORCH_MODULE(HfTextEncoder);

}  // namespace oclip

#endif  // OCLIP_MODEL_HF_TEXT_ENCODER_H_
