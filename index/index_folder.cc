#include "index/index_folder.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace oclip {
namespace index {

absl::StatusOr<IndexFolderPaths> PathsInIndexFolder(const std::string& folder,
                                                    const std::string& kind) {
  if (kind != "image" && kind != "text") {
    return absl::InvalidArgumentError(
        absl::StrCat("index kind '", kind, "' is not one of image, text"));
  }
  IndexFolderPaths paths;
  paths.index = absl::StrCat(folder, "/", kind, ".index");
  paths.index_infos = absl::StrCat(folder, "/", kind, ".index_infos.json");
  paths.metadata = absl::StrCat(folder, "/metadata.sqlite");
  return paths;
}

absl::StatusOr<std::unique_ptr<IndexFolder>> IndexFolder::Open(const std::string& folder,
                                                               const std::string& kind,
                                                               VectorIndexOptions options) {
  OCLIP_ASSIGN_OR_RETURN(IndexFolderPaths paths, PathsInIndexFolder(folder, kind));
  options.index_infos_path = paths.index_infos;
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<VectorIndex> vectors,
                         VectorIndex::Load(paths.index, options));
  MetadataStoreOptions store_options;
  store_options.read_only = true;
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<MetadataStore> metadata,
                         MetadataStore::Open(paths.metadata, store_options));
  return std::unique_ptr<IndexFolder>(new IndexFolder(std::move(vectors), std::move(metadata)));
}

absl::StatusOr<std::vector<std::vector<SearchHit>>> IndexFolder::Search(
    absl::Span<const float> queries, int64_t num_queries, int k) const {
  OCLIP_ASSIGN_OR_RETURN(SearchResult result, vectors_->Search(queries, num_queries, k));
  OCLIP_ASSIGN_OR_RETURN(std::vector<std::optional<MetadataRecord>> records,
                         metadata_->Lookup(result.ids));
  std::vector<std::vector<SearchHit>> hits(static_cast<size_t>(num_queries));
  for (int64_t q = 0; q < num_queries; ++q) {
    for (int j = 0; j < result.k; ++j) {
      const size_t at = static_cast<size_t>(q * result.k + j);
      if (result.ids[at] < 0) continue;  // FAISS's padding: fewer than k found.
      hits[q].push_back(SearchHit{result.ids[at], result.scores[at], std::move(records[at])});
    }
  }
  return hits;
}

}  // namespace index
}  // namespace oclip
