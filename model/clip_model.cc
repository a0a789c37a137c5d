#include "model/clip_model.h"

#include "absl/strings/str_cat.h"

namespace oclip {
namespace {

std::string ShapeString(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) absl::StrAppend(&s, i ? ", " : "", t.size(i));
  return s + "]";
}

}  // namespace

ClipModel::ClipModel(const ModelConfig& config, const torch::TensorOptions& options)
    : config_(config) {
  const Activation activation = config.quick_gelu ? Activation::kQuickGelu : Activation::kGelu;
  if (config.vision.is_resnet()) {
    resnet_ = register_module("visual", ModifiedResNet(config.vision, config.embed_dim, options));
  } else {
    vit_ = register_module(
        "visual", VisionTransformer(config.vision, config.embed_dim, activation, options));
  }
  if (config.text.is_hf()) {
    hf_text_ = register_module("text", HfTextEncoder(config.text, config.embed_dim, options));
  } else {
    // OpenCLIP's CLIP class keeps the text tower's members at the top level;
    // registering them here (and not the tower itself) reproduces those names.
    text_ = TextTransformer(config.text, config.embed_dim, activation, options);
    register_parameter("positional_embedding", text_->positional_embedding);
    register_parameter("text_projection", text_->text_projection);
    register_module("token_embedding", text_->token_embedding);
    register_module("transformer", text_->transformer);
    register_module("ln_final", text_->ln_final);
  }
  logit_scale_ = register_parameter("logit_scale", torch::empty({}, options));
}

absl::StatusOr<std::shared_ptr<ClipModel>> ClipModel::Create(
    const ModelConfig& config, const torch::TensorOptions& options) {
  if (config.text.is_hf() && !config.text.hf.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", config.name, ": HF text tower without its architecture"));
  }
  if (config.embed_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("model ", config.name, ": embed_dim <= 0"));
  }
  try {
    return std::shared_ptr<ClipModel>(new ClipModel(config, options));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory building model ", config.name));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building model ", config.name, ": ", e.what()));
  }
}

torch::Tensor ClipModel::ImageForward(const torch::Tensor& images) {
  return vit_ ? vit_(images) : resnet_(images);
}

torch::Tensor ClipModel::TextForward(const torch::Tensor& tokens) {
  return hf_text_ ? hf_text_(tokens) : text_(tokens);
}

absl::StatusOr<torch::Tensor> ClipModel::EncodeImage(const torch::Tensor& images,
                                                     bool normalize) {
  const int64_t s = config_.vision.image_size;
  if (!images.defined() || images.dim() != 4 || images.size(1) != 3 || images.size(2) != s ||
      images.size(3) != s || !images.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model ", config_.name, " expects float images [N, 3, ", s, ", ", s, "], got ",
        images.defined() ? ShapeString(images) : "none"));
  }
  try {
    torch::Tensor features = ImageForward(images.to(device(), logit_scale_.scalar_type()));
    return normalize ? torch::nn::functional::normalize(
                           features, torch::nn::functional::NormalizeFuncOptions().dim(-1))
                     : features;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("encode_image failed: ", e.what()));
  }
}

absl::StatusOr<torch::Tensor> ClipModel::EncodeText(const torch::Tensor& tokens,
                                                    bool normalize) {
  const int64_t max_length =
      config_.text.is_hf() ? config_.text.hf->max_position_embeddings - 2
                           : config_.text.context_length;
  const int64_t vocab =
      config_.text.is_hf() ? config_.text.hf->vocab_size : config_.text.vocab_size;
  if (!tokens.defined() || tokens.dim() != 2 || tokens.size(1) < 1 ||
      tokens.size(1) > max_length || tokens.scalar_type() != torch::kLong) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model ", config_.name, " expects int64 tokens [N, L] with L <= ", max_length,
        ", got ", tokens.defined() ? ShapeString(tokens) : "none"));
  }
  try {
    if (tokens.numel() > 0 && (tokens.min().item<int64_t>() < 0 ||
                               tokens.max().item<int64_t>() >= vocab)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model ", config_.name, ": token ids must lie in [0, ", vocab, ")"));
    }
    torch::Tensor features = TextForward(tokens.to(device()));
    return normalize ? torch::nn::functional::normalize(
                           features, torch::nn::functional::NormalizeFuncOptions().dim(-1))
                     : features;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("encode_text failed: ", e.what()));
  }
}

void ClipModel::SetGradCheckpointing(bool enable) {
  if (vit_) vit_->transformer->set_grad_checkpointing(enable);
  if (text_) text_->transformer->set_grad_checkpointing(enable);
  if (hf_text_) hf_text_->transformer->set_grad_checkpointing(enable);
}

int64_t ClipModel::NumParameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

}  // namespace oclip
