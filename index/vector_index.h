// A built FAISS index, loaded for search.
//
// Load() reads the file BuildIndex wrote and applies the search parameter
// tuned at build time (nprobe for IVF, efSearch for HNSW) from
// index_infos.json. IVF indexes are memory-mapped (faiss::IO_FLAG_MMAP: the
// inverted lists stay in the page cache, shared between processes, and
// loading is O(centroids)); FAISS cannot map Flat or HNSW indexes, so those
// are read into memory — memory_mapped() says which happened.
//
// Search takes float32 queries [q, d], row-major, and returns ids and scores
// [q, k], row-major, best first; the score is the inner product (cosine for
// normalised vectors), exact for Flat/HNSW, estimated from the codes for PQ.
// Where fewer than k vectors are found the id is -1 (its score is
// meaningless); MetadataStore::Lookup maps -1 to "no record".
//
// Thread safety: the index is immutable after construction — the search
// parameter is set once, before the object is shared — and FAISS's search is
// const for Flat, IVF (mmapped or not), IVF-PQ (with or without OPQ) and HNSW,
// so any number of threads may call Search concurrently. FAISS parallelises
// within one call over OpenMP threads (across queries for a batch); concurrent
// callers each get their own OpenMP team, so for many concurrent single-query
// callers cap OMP_NUM_THREADS (or omp_set_num_threads) to avoid
// oversubscription.
//
// Errors: NOT_FOUND (no index file), DATA_LOSS (FAISS cannot read it, or the
// infos file is corrupt), INVALID_ARGUMENT (queries.size() != q·d, k < 1).

#ifndef OCLIP_INDEX_VECTOR_INDEX_H_
#define OCLIP_INDEX_VECTOR_INDEX_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace faiss {
struct Index;
}  // namespace faiss

namespace oclip {
namespace index {

struct SearchResult {
  int64_t num_queries = 0;
  int k = 0;
  std::vector<int64_t> ids;   // [num_queries, k]
  std::vector<float> scores;  // [num_queries, k]
};

struct VectorIndexOptions {
  // Where the tuned parameters come from; empty: index_infos.json beside the
  // index file. A missing infos file is not an error: FAISS's defaults apply.
  std::string index_infos_path;
  // Overrides of the tuned values; 0 keeps them.
  int nprobe = 0;
  int ef_search = 0;
  bool memory_map = true;
};

class VectorIndex {
 public:
  static absl::StatusOr<std::unique_ptr<VectorIndex>> Load(
      const std::string& index_path, const VectorIndexOptions& options = {});

  // Takes ownership of an index built in this process; nprobe / ef_search
  // (0 = leave as is) are applied to the IVF or HNSW part of it.
  static absl::StatusOr<std::unique_ptr<VectorIndex>> FromFaiss(
      std::unique_ptr<faiss::Index> index, int nprobe, int ef_search);

  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;
  ~VectorIndex();

  // queries: float32 [num_queries, dim()], row-major.
  absl::StatusOr<SearchResult> Search(absl::Span<const float> queries,
                                      int64_t num_queries, int k) const;

  int dim() const;
  int64_t size() const;
  bool memory_mapped() const { return memory_mapped_; }
  int nprobe() const { return nprobe_; }
  int ef_search() const { return ef_search_; }

  // For tests and tools that need FAISS directly; valid while this lives.
  const faiss::Index& faiss_index() const { return *index_; }

 private:
  // Defined in the .cc: faiss::Index is incomplete here.
  VectorIndex(std::unique_ptr<faiss::Index> index, bool memory_mapped);
  absl::Status ApplySearchParameters(int nprobe, int ef_search);

  std::unique_ptr<faiss::Index> index_;
  bool memory_mapped_;
  int nprobe_ = 0;
  int ef_search_ = 0;
};

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_INDEX_VECTOR_INDEX_H_
