// A CLIP model: an image tower (VisionTransformer or ModifiedResNet), a text
// tower (OpenCLIP's TextTransformer, or an HF RoBERTa/XLM-R encoder) and the
// learned `logit_scale`, with OpenCLIP's exact state-dict layout:
//   - native text towers sit at the top level (token_embedding.weight,
//     positional_embedding, transformer.*, ln_final.*, text_projection), as in
//     OpenCLIP's `CLIP` class;
//   - HF text towers sit under `text.` (OpenCLIP's `CustomTextCLIP`).
//
// Creation allocates uninitialised parameters with the given TensorOptions
// (meta device for shape checks); fill them with checkpoint.h or init.h.
//
// The Encode* methods validate their inputs and return INVALID_ARGUMENT for
// wrong shapes/dtypes/token ids instead of letting LibTorch throw; INTERNAL if
// LibTorch fails anyway. They do not change the module: concurrent calls are
// safe in eval mode under InferenceMode/NoGradGuard.

#ifndef OCLIP_MODEL_CLIP_MODEL_H_
#define OCLIP_MODEL_CLIP_MODEL_H_

#include <memory>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/hf_text_encoder.h"
#include "model/modified_resnet.h"
#include "model/text_transformer.h"
#include "model/vision_transformer.h"

namespace oclip {

class ClipModel : public torch::nn::Module {
 public:
  // INVALID_ARGUMENT for a config the towers cannot be built from;
  // RESOURCE_EXHAUSTED when the allocation fails.
  static absl::StatusOr<std::shared_ptr<ClipModel>> Create(
      const ModelConfig& config,
      const torch::TensorOptions& options = torch::TensorOptions().dtype(torch::kFloat));

  // images: float [N, 3, S, S] (S = image_size), on the model's device.
  // Returns [N, embed_dim], L2-normalized along the last axis if `normalize`.
  absl::StatusOr<torch::Tensor> EncodeImage(const torch::Tensor& images,
                                            bool normalize = false);
  // tokens: int64 [N, L], L <= context_length (77 for all released models).
  absl::StatusOr<torch::Tensor> EncodeText(const torch::Tensor& tokens,
                                           bool normalize = false);

  // Unchecked forward passes (for training, where inputs are trusted).
  torch::Tensor ImageForward(const torch::Tensor& images);
  torch::Tensor TextForward(const torch::Tensor& tokens);

  // OpenCLIP's set_grad_checkpointing: the residual blocks of the ViT image
  // tower and of the text tower (native or HF) recompute their activations
  // in the backward pass instead of keeping them (model/grad_checkpointing.h)
  // while gradients are recorded. A ModifiedResNet image tower is left as it
  // is, as in OpenCLIP (its set_grad_checkpointing does nothing).
  void SetGradCheckpointing(bool enable);

  // The raw parameter; the scale applied to logits is its exp().
  const torch::Tensor& logit_scale() const { return logit_scale_; }
  const ModelConfig& config() const { return config_; }
  torch::Device device() const { return logit_scale_.device(); }
  // Sum of parameter elements (OpenCLIP's parameter count; buffers excluded).
  int64_t NumParameters() const;

 private:
  ClipModel(const ModelConfig& config, const torch::TensorOptions& options);

  ModelConfig config_;
  VisionTransformer vit_{nullptr};
  ModifiedResNet resnet_{nullptr};
  TextTransformer text_{nullptr};
  HfTextEncoder hf_text_{nullptr};
  torch::Tensor logit_scale_;
};

}  // namespace oclip

#endif  // OCLIP_MODEL_CLIP_MODEL_H_
