// The models a server was configured with, by name, as they load.
//
// Every configured model is known from the start (so a request for a model
// that is still loading gets UNAVAILABLE, not NOT_FOUND); each becomes
// usable when its ServedModel is added. Models are never removed while the
// registry lives, so a ServedModel* handed out stays valid until the
// registry is destroyed, which the server does only after every call and
// every pool task has finished.
//
// Thread safety: all methods are thread-safe.

#ifndef OCLIP_SERVER_MODEL_REGISTRY_H_
#define OCLIP_SERVER_MODEL_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/served_model.h"
#include "server/server_config.h"

namespace oclip {

class ModelRegistry {
 public:
  // `configs` in configuration order; `default_model` is one of their names.
  ModelRegistry(std::vector<ModelServingConfig> configs, std::string default_model);

  // Makes a loaded model usable. Its name must be one of the configs.
  void Add(std::unique_ptr<ServedModel> model);

  // `name` empty selects the default model. NOT_FOUND for a name that is not
  // configured (the message lists the known ones), UNAVAILABLE while loading.
  absl::StatusOr<ServedModel*> Find(const std::string& name) const;

  struct Entry {
    const ModelServingConfig* config;
    const ServedModel* model;  // Null while loading.
    bool is_default;
  };
  // Every configured model, in configuration order.
  std::vector<Entry> List() const;

  const std::vector<ModelServingConfig>& configs() const { return configs_; }
  const std::string& default_model() const { return default_model_; }

 private:
  const std::vector<ModelServingConfig> configs_;
  const std::string default_model_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ServedModel>> loaded_ ABSL_GUARDED_BY(mu_);
};

}  // namespace oclip

#endif  // OCLIP_SERVER_MODEL_REGISTRY_H_
