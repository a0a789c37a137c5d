#include "server/model_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace oclip {

ModelRegistry::ModelRegistry(std::vector<ModelServingConfig> configs, std::string default_model)
    : configs_(std::move(configs)), default_model_(std::move(default_model)) {}

void ModelRegistry::Add(std::unique_ptr<ServedModel> model) {
  absl::MutexLock lock(&mu_);
  std::string name = model->serving_config().name;
  loaded_[name] = std::move(model);
}

absl::StatusOr<ServedModel*> ModelRegistry::Find(const std::string& name) const {
  const std::string& wanted = name.empty() ? default_model_ : name;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = loaded_.find(wanted); it != loaded_.end()) return it->second.get();
  }
  for (const ModelServingConfig& config : configs_) {
    if (config.name == wanted) {
      return absl::UnavailableError(absl::StrCat("model '", wanted, "' is still loading"));
    }
  }
  std::vector<std::string> names;
  for (const ModelServingConfig& config : configs_) names.push_back(config.name);
  return absl::NotFoundError(absl::StrCat("unknown model '", wanted,
                                          "'; this server has: ", absl::StrJoin(names, ", ")));
}

std::vector<ModelRegistry::Entry> ModelRegistry::List() const {
  std::vector<Entry> entries;
  absl::MutexLock lock(&mu_);
  for (const ModelServingConfig& config : configs_) {
    auto it = loaded_.find(config.name);
    entries.push_back(
        {&config, it == loaded_.end() ? nullptr : it->second.get(), config.name == default_model_});
  }
  return entries;
}

}  // namespace oclip
