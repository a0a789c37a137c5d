// The indexes a server searches, by name: every configured index folder
// opened at start (memory-mapped where FAISS can), so a bad folder stops the
// server before it listens instead of failing the first Search.
//
// Each index names the served model that encodes its text and image queries
// (the default model when the config leaves it empty). Whether that model's
// embedding dimension matches the index is checked once the model has
// loaded (CheckModel), since models load in the background.
//
// Thread safety: immutable after Load(); any thread may call the accessors
// and search the folders concurrently.

#ifndef OCLIP_SERVER_INDEX_REGISTRY_H_
#define OCLIP_SERVER_INDEX_REGISTRY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "index/index_folder.h"
#include "server/server_config.h"

namespace oclip {

struct ServedIndex {
  IndexServingConfig config;  // `model` resolved: never empty.
  std::unique_ptr<index::IndexFolder> folder;
};

class IndexRegistry {
 public:
  // Opens every index; the first failure is returned, naming the index.
  static absl::StatusOr<std::unique_ptr<IndexRegistry>> Load(
      const std::vector<IndexServingConfig>& configs, const std::string& default_model);

  // NOT_FOUND (listing the known names) for an index that is not served.
  absl::StatusOr<const ServedIndex*> Find(const std::string& name) const;

  // FAILED_PRECONDITION when an index that `model_name` encodes queries for
  // holds vectors of another dimension than `embed_dim`.
  absl::Status CheckModel(const std::string& model_name, int64_t embed_dim) const;

  const std::vector<ServedIndex>& indexes() const { return indexes_; }

 private:
  explicit IndexRegistry(std::vector<ServedIndex> indexes) : indexes_(std::move(indexes)) {}

  const std::vector<ServedIndex> indexes_;
};

}  // namespace oclip

#endif  // OCLIP_SERVER_INDEX_REGISTRY_H_
