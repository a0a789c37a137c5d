#include "model/model_loader.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/checkpoint/checkpoint.h"
#include "model/init.h"

namespace oclip {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
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
  if (!FileExists(options.pretrained)) {
    return absl::NotFoundError(absl::StrCat(
        "--pretrained ", options.pretrained,
        ": no such checkpoint file (give a .safetensors/.bin/.pt path, or \"random\")"));
  }
  OCLIP_ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(options.pretrained));
  ModelConfig config;
  if (options.model.empty()) {
    OCLIP_ASSIGN_OR_RETURN(config, InferConfigFromStateDict(checkpoint.state_dict));
    config.name = options.pretrained;
  } else {
    OCLIP_ASSIGN_OR_RETURN(config, ResolveModelConfig(options.model));
  }
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, ClipModel::Create(config));
  OCLIP_RETURN_IF_ERROR(
      LoadStateDict(*model, std::move(checkpoint.state_dict), options.pretrained));
  model->eval();
  return model;
}

}  // namespace oclip
