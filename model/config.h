// Model configurations: the architecture of a CLIP model, as OpenCLIP's JSON
// model configs describe it, plus the built-in registry of the released
// models (RN50 ... ViT-g-14, the -quickgelu variants, the RoBERTa/XLM-R text
// towers).
//
// A config is plain data; building a model from it is clip_model.h's job.
// Parsing rejects options that oclip does not implement (timm towers, CoCa,
// LayerScale, ...) with INVALID_ARGUMENT rather than silently ignoring them,
// because a silently different architecture gives silently wrong embeddings.

#ifndef OCLIP_MODEL_CONFIG_H_
#define OCLIP_MODEL_CONFIG_H_

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace oclip {

struct VisionConfig {
  // Non-empty: a ModifiedResNet with this many bottlenecks per stage.
  // Empty: a VisionTransformer of `layers` blocks.
  std::vector<int> resnet_layers;
  int layers = 12;
  int width = 768;
  int head_width = 64;
  double mlp_ratio = 4.0;
  int patch_size = 16;
  int image_size = 224;

  bool is_resnet() const { return !resnet_layers.empty(); }
  int heads() const;  // ViT: width / head_width; ResNet attnpool: 32 * width / head_width.
  int mlp_width() const { return static_cast<int>(width * mlp_ratio); }  // Truncates, like int().
  int grid_size() const;  // Tokens per side (patch grid, or the ResNet's final feature map).
};

// The architecture of a Hugging Face BERT-style encoder (RoBERTa, XLM-R), i.e.
// the fields of its config.json that shape the weights and the math.
struct HfTextConfig {
  std::string model_type;  // "roberta" or "xlm-roberta".
  int vocab_size = 0;
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 0;
  int type_vocab_size = 1;
  double layer_norm_eps = 1e-5;
  int pad_token_id = 1;
};

struct TextConfig {
  int context_length = 77;
  int vocab_size = 49408;
  int width = 512;
  int heads = 8;
  int layers = 12;
  double mlp_ratio = 4.0;

  // HF text tower (empty name: OpenCLIP's own TextTransformer).
  std::string hf_model_name;
  std::string hf_tokenizer_name;
  std::string hf_pooler_type = "mean_pooler";
  std::string hf_proj_type = "mlp";
  std::optional<HfTextConfig> hf;  // Set iff hf_model_name is set.

  bool is_hf() const { return !hf_model_name.empty(); }
  int mlp_width() const { return static_cast<int>(width * mlp_ratio); }
};

struct ModelConfig {
  std::string name;  // Registry name, or the JSON file's stem.
  int embed_dim = 512;
  bool quick_gelu = false;
  VisionConfig vision;
  TextConfig text;
  // The image normalization the weights expect (OpenCLIP's preprocess_cfg):
  // OpenAI's, unless the pretrained registry says otherwise.
  std::array<float, 3> image_mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> image_std = {0.26862954f, 0.26130258f, 0.27577711f};

  // OpenCLIP's CustomTextCLIP layout: the text tower lives under `text.` in
  // the state dict (always for HF towers).
  bool custom_text() const { return text.is_hf(); }
};

// Parses an OpenCLIP model config JSON (`embed_dim`, `vision_cfg`,
// `text_cfg`, optional `quick_gelu`). Also accepts the wrappers in which such
// a config is found: HF-hub `open_clip_config.json` (`model_cfg`) and a
// `{open_clip_config, hf_config}` pair that carries the HF encoder's
// config.json. INVALID_ARGUMENT for unsupported or malformed fields.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& name);

// Built-in registry, explicit (no static self-registration).
std::vector<std::string> ListModelNames();
// NOT_FOUND (listing the known names) for an unknown name. `/` in the name is
// read as `-`, as OpenCLIP does.
absl::StatusOr<ModelConfig> GetBuiltinModelConfig(const std::string& name);
// The HF encoder architectures the registry knows: roberta-base,
// xlm-roberta-base, xlm-roberta-large.
absl::StatusOr<HfTextConfig> GetBuiltinHfTextConfig(const std::string& hf_model_name);

// `name_or_path`: a registry name, or a path to a JSON config (anything ending
// in .json or containing a path separator).
absl::StatusOr<ModelConfig> ResolveModelConfig(const std::string& name_or_path);

}  // namespace oclip

#endif  // OCLIP_MODEL_CONFIG_H_
