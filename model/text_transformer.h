// OpenCLIP's native text tower: token embedding, positional embedding, a
// causal pre-LN transformer, ln_final, end-of-text pooling (the position of
// the largest token id, which is <end_of_text> in the CLIP vocabulary) and a
// bare `text_projection` matrix.
//
// forward: tokens int64 [N, context_length] -> features [N, embed_dim]; only
// the positions up to the batch's last <end_of_text> are computed (the rest
// cannot change a pooled feature under the causal mask).
// In OpenCLIP's CLIP class these parameters sit at the top level of the
// state dict (token_embedding.weight, positional_embedding, transformer.*,
// ln_final.*, text_projection); clip_model.h registers them there.

#ifndef OCLIP_MODEL_TEXT_TRANSFORMER_H_
#define OCLIP_MODEL_TEXT_TRANSFORMER_H_

#include <torch/torch.h>

#include "model/config.h"
#include "model/layers.h"

namespace oclip {

class TextTransformerImpl : public torch::nn::Module {
 public:
  TextTransformerImpl(const TextConfig& config, int64_t embed_dim, Activation activation,
                      const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& tokens);

  Embedding token_embedding;
  torch::Tensor positional_embedding;  // [context_length, width]
  Transformer transformer;
  LayerNorm ln_final;
  torch::Tensor text_projection;  // [width, embed_dim]

 private:
  torch::Tensor CausalMask(int64_t length, const torch::Tensor& like) const;
};
TORCH_MODULE(TextTransformer);

}  // namespace oclip

#endif  // OCLIP_MODEL_TEXT_TRANSFORMER_H_
