#include "server/index_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace oclip {

absl::StatusOr<std::unique_ptr<IndexRegistry>> IndexRegistry::Load(
    const std::vector<IndexServingConfig>& configs, const std::string& default_model) {
  std::vector<ServedIndex> indexes;
  for (const IndexServingConfig& config : configs) {
    index::VectorIndexOptions options;
    options.nprobe = config.nprobe;
    options.ef_search = config.ef_search;
    absl::StatusOr<std::unique_ptr<index::IndexFolder>> folder =
        index::IndexFolder::Open(config.folder, config.kind, options);
    if (!folder.ok()) {
      return absl::Status(folder.status().code(), absl::StrCat("index ", config.name, ": ",
                                                               folder.status().message()));
    }
    ServedIndex served{config, *std::move(folder)};
    if (served.config.model.empty()) served.config.model = default_model;
    indexes.push_back(std::move(served));
  }
  return std::unique_ptr<IndexRegistry>(new IndexRegistry(std::move(indexes)));
}

absl::StatusOr<const ServedIndex*> IndexRegistry::Find(const std::string& name) const {
  for (const ServedIndex& index : indexes_) {
    if (index.config.name == name) return &index;
  }
  std::vector<std::string> names;
  for (const ServedIndex& index : indexes_) names.push_back(index.config.name);
  return absl::NotFoundError(
      indexes_.empty()
          ? absl::StrCat("unknown index '", name, "': this server serves no index")
          : absl::StrCat("unknown index '", name, "' (indexes: ", absl::StrJoin(names, ", "),
                         ")"));
}

absl::Status IndexRegistry::CheckModel(const std::string& model_name, int64_t embed_dim) const {
  for (const ServedIndex& index : indexes_) {
    if (index.config.model == model_name && index.folder->dim() != embed_dim) {
      return absl::FailedPreconditionError(absl::StrCat(
          "index ", index.config.name, " holds ", index.folder->dim(), "-d vectors but its model ",
          model_name, " produces ", embed_dim, "-d embeddings (set indexes[].model to the model "
          "that computed them)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace oclip
