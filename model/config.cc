#include "model/config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

using Json = nlohmann::json;

// --- Built-in registry -----------------------------------------------------
// The architectures of OpenCLIP's released models (v2.23 model_configs).

struct BuiltinModel {
  const char* name;
  int embed_dim;
  bool quick_gelu;
  // Vision: resnet_layers empty for ViTs.
  std::vector<int> resnet_layers;
  int vision_layers;
  int vision_width;
  int head_width;
  double mlp_ratio;
  int patch_size;
  int image_size;
  // Text: hf_model_name empty for the native tower.
  int text_width;
  int text_heads;
  int text_layers;
  const char* hf_model_name;
};

const std::vector<BuiltinModel>& BuiltinModels() {
  static const auto* models = new std::vector<BuiltinModel>{
      // name, embed, quick_gelu, resnet layers, vit layers, width, head_w, mlp, patch, image, text w/h/L, hf
      {"RN50", 1024, false, {3, 4, 6, 3}, 0, 64, 64, 4.0, 0, 224, 512, 8, 12, ""},
      {"RN101", 512, false, {3, 4, 23, 3}, 0, 64, 64, 4.0, 0, 224, 512, 8, 12, ""},
      {"RN50x4", 640, false, {4, 6, 10, 6}, 0, 80, 64, 4.0, 0, 288, 640, 10, 12, ""},
      {"RN50x16", 768, false, {6, 8, 18, 8}, 0, 96, 64, 4.0, 0, 384, 768, 12, 12, ""},
      {"RN50x64", 1024, false, {3, 15, 36, 10}, 0, 128, 64, 4.0, 0, 448, 1024, 16, 12, ""},
      {"ViT-B-32", 512, false, {}, 12, 768, 64, 4.0, 32, 224, 512, 8, 12, ""},
      {"ViT-B-16", 512, false, {}, 12, 768, 64, 4.0, 16, 224, 512, 8, 12, ""},
      {"ViT-B-16-plus-240", 640, false, {}, 12, 896, 64, 4.0, 16, 240, 640, 10, 12, ""},
      {"ViT-L-14", 768, false, {}, 24, 1024, 64, 4.0, 14, 224, 768, 12, 12, ""},
      {"ViT-L-14-336", 768, false, {}, 24, 1024, 64, 4.0, 14, 336, 768, 12, 12, ""},
      {"ViT-H-14", 1024, false, {}, 32, 1280, 80, 4.0, 14, 224, 1024, 16, 24, ""},
      {"ViT-g-14", 1024, false, {}, 40, 1408, 88, 4.3637, 14, 224, 1024, 16, 24, ""},
      {"RN50-quickgelu", 1024, true, {3, 4, 6, 3}, 0, 64, 64, 4.0, 0, 224, 512, 8, 12, ""},
      {"RN101-quickgelu", 512, true, {3, 4, 23, 3}, 0, 64, 64, 4.0, 0, 224, 512, 8, 12, ""},
      {"ViT-B-32-quickgelu", 512, true, {}, 12, 768, 64, 4.0, 32, 224, 512, 8, 12, ""},
      {"ViT-B-16-quickgelu", 512, true, {}, 12, 768, 64, 4.0, 16, 224, 512, 8, 12, ""},
      {"ViT-L-14-quickgelu", 768, true, {}, 24, 1024, 64, 4.0, 14, 224, 768, 12, 12, ""},
      {"ViT-H-14-quickgelu", 1024, true, {}, 32, 1280, 80, 4.0, 14, 224, 1024, 16, 24, ""},
      {"roberta-ViT-B-32", 512, true, {}, 12, 768, 64, 4.0, 32, 224, 0, 0, 0, "roberta-base"},
      {"xlm-roberta-base-ViT-B-32", 512, false, {}, 12, 768, 64, 4.0, 32, 224, 0, 0, 0,
       "xlm-roberta-base"},
      {"xlm-roberta-large-ViT-H-14", 1024, false, {}, 32, 1280, 80, 4.0, 14, 224, 0, 0, 0,
       "xlm-roberta-large"},
  };
  return *models;
}

// The encoder architectures of the HF text towers (their config.json).
const std::vector<HfTextConfig>& BuiltinHfConfigs() {
  static const auto* configs = new std::vector<HfTextConfig>{
      {"roberta", 50265, 768, 12, 12, 3072, 514, 1, 1e-5, 1},
      {"xlm-roberta", 250002, 768, 12, 12, 3072, 514, 1, 1e-5, 1},
      {"xlm-roberta", 250002, 1024, 24, 16, 4096, 514, 1, 1e-5, 1},
  };
  return *configs;
}
constexpr const char* kBuiltinHfNames[] = {"roberta-base", "xlm-roberta-base",
                                           "xlm-roberta-large"};

ModelConfig FromBuiltin(const BuiltinModel& m) {
  ModelConfig c;
  c.name = m.name;
  c.embed_dim = m.embed_dim;
  c.quick_gelu = m.quick_gelu;
  c.vision.resnet_layers = m.resnet_layers;
  c.vision.layers = m.vision_layers;
  c.vision.width = m.vision_width;
  c.vision.head_width = m.head_width;
  c.vision.mlp_ratio = m.mlp_ratio;
  c.vision.patch_size = m.patch_size;
  c.vision.image_size = m.image_size;
  if (m.hf_model_name[0] != '\0') {
    c.text.hf_model_name = m.hf_model_name;
    c.text.hf_tokenizer_name = m.hf_model_name;
    c.text.hf = GetBuiltinHfTextConfig(m.hf_model_name).value();
  } else {
    c.text.width = m.text_width;
    c.text.heads = m.text_heads;
    c.text.layers = m.text_layers;
  }
  return c;
}

// --- JSON parsing ------------------------------------------------------------

absl::Status Unsupported(const std::string& where, const std::string& key) {
  return absl::InvalidArgumentError(
      absl::StrCat("model config: ", where, ".", key, " is not supported by oclip"));
}

// Reads an optional integer field; `key` absent or null leaves `out` unchanged.
absl::Status ReadInt(const Json& obj, const char* key, const std::string& where,
                     int* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 ||
      it->get<int64_t>() > (1 << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config: ", where, ".", key, " must be a positive integer, got ", it->dump()));
  }
  *out = it->get<int>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& obj, const char* key, const std::string& where,
                        double* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number() || it->get<double>() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config: ", where, ".", key, " must be a positive number, got ", it->dump()));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadString(const Json& obj, const char* key, const std::string& where,
                        std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config: ", where, ".", key, " must be a string"));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// Keys that change the architecture in ways oclip does not implement. They are
// accepted when they hold their default (null/false/0) value.
absl::Status RejectNonDefault(const Json& obj, const std::string& where,
                              std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) continue;
    if (it->is_boolean() && !it->get<bool>()) continue;
    if (it->is_number() && it->get<double>() == 0) continue;
    return Unsupported(where, key);
  }
  return absl::OkStatus();
}

absl::StatusOr<VisionConfig> ParseVision(const Json& v) {
  if (!v.is_object()) return absl::InvalidArgumentError("model config: vision_cfg must be an object");
  OCLIP_RETURN_IF_ERROR(RejectNonDefault(
      v, "vision_cfg",
      {"timm_model_name", "ls_init_value", "attentional_pool", "no_ln_pre",
       "final_ln_after_pool", "output_tokens", "act_kwargs", "norm_kwargs"}));
  for (const char* key : {"pos_embed_type", "pool_type"}) {
    auto it = v.find(key);
    if (it != v.end() && !it->is_null() && *it != "learnable" && *it != "tok") {
      return Unsupported("vision_cfg", key);
    }
  }
  VisionConfig c;
  auto layers = v.find("layers");
  if (layers != v.end() && layers->is_array()) {
    if (layers->size() != 4) {
      return absl::InvalidArgumentError("model config: vision_cfg.layers must be an int or 4 ints");
    }
    for (const auto& n : *layers) {
      if (!n.is_number_integer() || n.get<int>() <= 0) {
        return absl::InvalidArgumentError("model config: vision_cfg.layers must be positive");
      }
      c.resnet_layers.push_back(n.get<int>());
    }
  } else {
    OCLIP_RETURN_IF_ERROR(ReadInt(v, "layers", "vision_cfg", &c.layers));
  }
  OCLIP_RETURN_IF_ERROR(ReadInt(v, "width", "vision_cfg", &c.width));
  OCLIP_RETURN_IF_ERROR(ReadInt(v, "head_width", "vision_cfg", &c.head_width));
  OCLIP_RETURN_IF_ERROR(ReadDouble(v, "mlp_ratio", "vision_cfg", &c.mlp_ratio));
  if (!c.is_resnet()) OCLIP_RETURN_IF_ERROR(ReadInt(v, "patch_size", "vision_cfg", &c.patch_size));
  auto image_size = v.find("image_size");
  if (image_size != v.end() && image_size->is_array()) {
    if (image_size->size() != 2 || (*image_size)[0] != (*image_size)[1] ||
        !(*image_size)[0].is_number_integer()) {
      return absl::InvalidArgumentError("model config: non-square image_size is not supported");
    }
    c.image_size = (*image_size)[0].get<int>();
  } else {
    OCLIP_RETURN_IF_ERROR(ReadInt(v, "image_size", "vision_cfg", &c.image_size));
  }
  if (c.is_resnet()) {
    if (c.image_size % 32 != 0) {
      return absl::InvalidArgumentError("model config: a ResNet image_size must be a multiple of 32");
    }
    if ((32 * c.width) % c.head_width != 0) {
      return absl::InvalidArgumentError("model config: 32 * width must be a multiple of head_width");
    }
  } else {
    if (c.image_size % c.patch_size != 0) {
      return absl::InvalidArgumentError("model config: image_size must be a multiple of patch_size");
    }
    if (c.width % c.head_width != 0) {
      return absl::InvalidArgumentError("model config: vision width must be a multiple of head_width");
    }
  }
  return c;
}

absl::StatusOr<HfTextConfig> ParseHfConfig(const Json& h) {
  HfTextConfig c;
  OCLIP_RETURN_IF_ERROR(ReadString(h, "model_type", "hf_config", &c.model_type));
  if (c.model_type != "roberta" && c.model_type != "xlm-roberta") {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config: HF text towers of type '", c.model_type,
        "' are not supported (roberta, xlm-roberta are)"));
  }
  OCLIP_RETURN_IF_ERROR(ReadInt(h, "vocab_size", "hf_config", &c.vocab_size));
  OCLIP_RETURN_IF_ERROR(ReadInt(h, "hidden_size", "hf_config", &c.hidden_size));
  OCLIP_RETURN_IF_ERROR(ReadInt(h, "num_hidden_layers", "hf_config", &c.num_hidden_layers));
  OCLIP_RETURN_IF_ERROR(ReadInt(h, "num_attention_heads", "hf_config", &c.num_attention_heads));
  OCLIP_RETURN_IF_ERROR(ReadInt(h, "intermediate_size", "hf_config", &c.intermediate_size));
  OCLIP_RETURN_IF_ERROR(
      ReadInt(h, "max_position_embeddings", "hf_config", &c.max_position_embeddings));
  OCLIP_RETURN_IF_ERROR(ReadInt(h, "type_vocab_size", "hf_config", &c.type_vocab_size));
  OCLIP_RETURN_IF_ERROR(ReadDouble(h, "layer_norm_eps", "hf_config", &c.layer_norm_eps));
  auto pad = h.find("pad_token_id");
  if (pad != h.end() && pad->is_number_integer()) c.pad_token_id = pad->get<int>();
  std::string act = "gelu";
  OCLIP_RETURN_IF_ERROR(ReadString(h, "hidden_act", "hf_config", &act));
  if (act != "gelu") return Unsupported("hf_config", "hidden_act");
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_hidden_layers <= 0 ||
      c.num_attention_heads <= 0 || c.intermediate_size <= 0 ||
      c.max_position_embeddings <= 0 || c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError("model config: hf_config is incomplete or inconsistent");
  }
  return c;
}

absl::StatusOr<TextConfig> ParseText(const Json& t, const Json* hf_config) {
  if (!t.is_object()) return absl::InvalidArgumentError("model config: text_cfg must be an object");
  OCLIP_RETURN_IF_ERROR(RejectNonDefault(
      t, "text_cfg",
      {"ls_init_value", "embed_cls", "no_causal_mask", "proj_bias", "output_tokens",
       "act_kwargs", "norm_kwargs"}));
  auto pool = t.find("pool_type");
  if (pool != t.end() && !pool->is_null() && *pool != "argmax") {
    return Unsupported("text_cfg", "pool_type");
  }
  TextConfig c;
  OCLIP_RETURN_IF_ERROR(ReadString(t, "hf_model_name", "text_cfg", &c.hf_model_name));
  OCLIP_RETURN_IF_ERROR(ReadString(t, "hf_tokenizer_name", "text_cfg", &c.hf_tokenizer_name));
  OCLIP_RETURN_IF_ERROR(ReadString(t, "hf_pooler_type", "text_cfg", &c.hf_pooler_type));
  OCLIP_RETURN_IF_ERROR(ReadString(t, "hf_proj_type", "text_cfg", &c.hf_proj_type));
  OCLIP_RETURN_IF_ERROR(ReadInt(t, "context_length", "text_cfg", &c.context_length));
  if (c.is_hf()) {
    if (c.hf_pooler_type != "mean_pooler") return Unsupported("text_cfg", "hf_pooler_type");
    if (c.hf_proj_type != "mlp" && c.hf_proj_type != "linear") {
      return Unsupported("text_cfg", "hf_proj_type");
    }
    if (hf_config != nullptr) {
      OCLIP_ASSIGN_OR_RETURN(c.hf, ParseHfConfig(*hf_config));
    } else {
      OCLIP_ASSIGN_OR_RETURN(c.hf, GetBuiltinHfTextConfig(c.hf_model_name));
    }
    return c;
  }
  OCLIP_RETURN_IF_ERROR(ReadInt(t, "vocab_size", "text_cfg", &c.vocab_size));
  OCLIP_RETURN_IF_ERROR(ReadInt(t, "width", "text_cfg", &c.width));
  OCLIP_RETURN_IF_ERROR(ReadInt(t, "heads", "text_cfg", &c.heads));
  OCLIP_RETURN_IF_ERROR(ReadInt(t, "layers", "text_cfg", &c.layers));
  OCLIP_RETURN_IF_ERROR(ReadDouble(t, "mlp_ratio", "text_cfg", &c.mlp_ratio));
  if (c.width % c.heads != 0) {
    return absl::InvalidArgumentError("model config: text width must be a multiple of heads");
  }
  return c;
}

}  // namespace

int VisionConfig::heads() const {
  return is_resnet() ? 32 * width / head_width : width / head_width;
}

int VisionConfig::grid_size() const {
  return is_resnet() ? image_size / 32 : image_size / patch_size;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& name) {
  Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("model config ", name, ": not a JSON object"));
  }
  const Json* cfg = &root;
  const Json* hf_config = nullptr;
  if (root.contains("open_clip_config")) {
    cfg = &root["open_clip_config"];
    if (root.contains("hf_config")) hf_config = &root["hf_config"];
  } else if (root.contains("model_cfg")) {
    cfg = &root["model_cfg"];  // HF hub open_clip_config.json.
  }
  if (!cfg->is_object() || !cfg->contains("embed_dim") || !cfg->contains("vision_cfg") ||
      !cfg->contains("text_cfg")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config ", name, ": needs embed_dim, vision_cfg and text_cfg"));
  }
  OCLIP_RETURN_IF_ERROR(RejectNonDefault(
      *cfg, "", {"multimodal_cfg", "custom_text", "init_logit_bias"}));
  ModelConfig c;
  c.name = name;
  OCLIP_RETURN_IF_ERROR(ReadInt(*cfg, "embed_dim", "", &c.embed_dim));
  auto quick_gelu = cfg->find("quick_gelu");
  if (quick_gelu != cfg->end() && !quick_gelu->is_null()) {
    if (!quick_gelu->is_boolean()) {
      return absl::InvalidArgumentError("model config: quick_gelu must be a boolean");
    }
    c.quick_gelu = quick_gelu->get<bool>();
  }
  OCLIP_ASSIGN_OR_RETURN(c.vision, ParseVision((*cfg)["vision_cfg"]));
  OCLIP_ASSIGN_OR_RETURN(c.text, ParseText((*cfg)["text_cfg"], hf_config));
  return c;
}

std::vector<std::string> ListModelNames() {
  std::vector<std::string> names;
  for (const auto& m : BuiltinModels()) names.push_back(m.name);
  return names;
}

absl::StatusOr<ModelConfig> GetBuiltinModelConfig(const std::string& name) {
  const std::string normalized = absl::StrReplaceAll(name, {{"/", "-"}});
  for (const auto& m : BuiltinModels()) {
    if (normalized == m.name) return FromBuiltin(m);
  }
  return absl::NotFoundError(absl::StrCat("unknown model '", name, "'; known models: ",
                                          absl::StrJoin(ListModelNames(), ", "),
                                          " (or a path to a JSON config)"));
}

absl::StatusOr<HfTextConfig> GetBuiltinHfTextConfig(const std::string& hf_model_name) {
  for (size_t i = 0; i < BuiltinHfConfigs().size(); ++i) {
    if (hf_model_name == kBuiltinHfNames[i]) return BuiltinHfConfigs()[i];
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "HF text tower '", hf_model_name,
      "' is not built in (roberta-base, xlm-roberta-base, xlm-roberta-large are); "
      "give its config.json as \"hf_config\" next to \"open_clip_config\""));
}

absl::StatusOr<ModelConfig> ResolveModelConfig(const std::string& name_or_path) {
  if (!absl::EndsWith(name_or_path, ".json") &&
      name_or_path.find('/') == std::string::npos) {
    return GetBuiltinModelConfig(name_or_path);
  }
  if (!absl::EndsWith(name_or_path, ".json")) {
    auto builtin = GetBuiltinModelConfig(name_or_path);  // "ViT-B/32" spelling.
    if (builtin.ok()) return builtin;
  }
  OCLIP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(name_or_path));
  std::string stem = name_or_path.substr(name_or_path.find_last_of('/') + 1);
  if (absl::EndsWith(stem, ".json")) stem.resize(stem.size() - 5);
  return ParseModelConfig(text, stem);
}

}  // namespace oclip
