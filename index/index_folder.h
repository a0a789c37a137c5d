// An index folder as `oclip index build` writes it, opened for search: the
// FAISS index of one embedding kind and the metadata store its ids join to.
//
//   FOLDER/image.index, FOLDER/image.index_infos.json   (kind "image")
//   FOLDER/text.index,  FOLDER/text.index_infos.json    (kind "text")
//   FOLDER/metadata.sqlite                              (shared by both kinds)
//
// The index is loaded with the search parameters tuned at build time (the
// kind's infos file), memory-mapped where FAISS can; the store is opened
// read-only, so any number of servers and tools can share one folder.
//
// Errors: INVALID_ARGUMENT (kind is not image or text; queries of the wrong
// size; k < 1), NOT_FOUND (the index or the store is missing), DATA_LOSS
// (either is unreadable).
//
// Thread safety: Search may be called concurrently (see VectorIndex and
// MetadataStore).

#ifndef OCLIP_INDEX_INDEX_FOLDER_H_
#define OCLIP_INDEX_INDEX_FOLDER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "index/metadata_store.h"
#include "index/vector_index.h"

namespace oclip {
namespace index {

// The file names of one kind ("image" or "text") in an index folder.
struct IndexFolderPaths {
  std::string index;
  std::string index_infos;
  std::string metadata;
};
absl::StatusOr<IndexFolderPaths> PathsInIndexFolder(const std::string& folder,
                                                    const std::string& kind);

struct SearchHit {
  int64_t id = 0;
  float score = 0;  // inner product (cosine for normalised vectors)
  // Empty when the store has no record for the id.
  std::optional<MetadataRecord> metadata;
};

class IndexFolder {
 public:
  // `options.index_infos_path` is ignored: the kind's infos file is used.
  static absl::StatusOr<std::unique_ptr<IndexFolder>> Open(
      const std::string& folder, const std::string& kind, VectorIndexOptions options = {});

  // queries: float32 [num_queries, dim()], row-major. Per query its hits,
  // best first; fewer than k when the index holds fewer vectors.
  absl::StatusOr<std::vector<std::vector<SearchHit>>> Search(absl::Span<const float> queries,
                                                             int64_t num_queries, int k) const;

  int dim() const { return vectors_->dim(); }
  int64_t size() const { return vectors_->size(); }
  const VectorIndex& vectors() const { return *vectors_; }

 private:
  IndexFolder(std::unique_ptr<VectorIndex> vectors, std::unique_ptr<MetadataStore> metadata)
      : vectors_(std::move(vectors)), metadata_(std::move(metadata)) {}

  std::unique_ptr<VectorIndex> vectors_;
  std::unique_ptr<MetadataStore> metadata_;
};

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_INDEX_INDEX_FOLDER_H_
