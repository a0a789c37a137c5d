#include "model/model_loader.h"

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/logging.h"
#include "core/status.h"
#include "model/checkpoint/checkpoint.h"
#include "model/init.h"

namespace oclip {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// A path, not a tag: tags are plain words ("laion2b_s34b_b79k").
bool LooksLikePath(const std::string& pretrained) {
  return absl::StrContains(pretrained, '/') || absl::StrContains(pretrained, '.');
}

// Resolves a registry tag to its downloaded file, and the config the weights
// need (normalization, activation).
absl::StatusOr<std::string> ResolveTag(const LoadModelOptions& options, ModelConfig& config) {
  OCLIP_ASSIGN_OR_RETURN(PretrainedEntry entry, GetPretrained(options.model, options.pretrained));
  config.image_mean = entry.image_mean;
  config.image_std = entry.image_std;
  if (entry.tag == "openai") {
    config.quick_gelu = true;  // OpenCLIP's load_openai_model ignores the config's activation.
  } else if (QuickGeluMismatch(entry, config.quick_gelu)) {
    LogWarning(absl::StrCat(
        "--pretrained ", entry.tag, " was trained with ", entry.quick_gelu ? "QuickGELU" : "GELU",
        " but model ", config.name, " uses ", config.quick_gelu ? "QuickGELU" : "GELU",
        "; OpenCLIP computes the same (degraded) features. Use ", config.name,
        entry.quick_gelu ? "-quickgelu" : " without -quickgelu", " for the intended ones."));
  }
  return FetchPretrainedEntry(entry, options.fetch);
}

}  // namespace

absl::StatusOr<std::shared_ptr<ClipModel>> LoadModel(const LoadModelOptions& options) {
  if (options.pretrained == "random") {
    if (options.model.empty()) {
      return absl::InvalidArgumentError("--pretrained random needs --model");
    }
    OCLIP_ASSIGN_OR_RETURN(ModelConfig config, ResolveModelConfig(options.model));
    OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, ClipModel::Create(config));
    InitializeRandom(*model, options.seed);
    model->eval();
    return model;
  }
  ModelConfig config;
  std::string path = options.pretrained;
  if (!FileExists(path)) {
    if (LooksLikePath(path) || options.model.empty()) {
      return absl::NotFoundError(absl::StrCat(
          "--pretrained ", path,
          ": no such checkpoint file (give a .safetensors/.bin/.pt path, a pretrained tag with "
          "--model, or \"random\")"));
    }
    OCLIP_ASSIGN_OR_RETURN(config, ResolveModelConfig(options.model));
    OCLIP_ASSIGN_OR_RETURN(path, ResolveTag(options, config));
  } else if (!options.model.empty()) {
    OCLIP_ASSIGN_OR_RETURN(config, ResolveModelConfig(options.model));
  }
  OCLIP_ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(path));
  if (options.model.empty()) {
    OCLIP_ASSIGN_OR_RETURN(config, InferConfigFromStateDict(checkpoint.state_dict));
    config.name = path;
  }
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, ClipModel::Create(config));
  OCLIP_RETURN_IF_ERROR(LoadStateDict(*model, std::move(checkpoint.state_dict), path));
  model->eval();
  return model;
}

}  // namespace oclip
