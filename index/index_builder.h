// Builds a FAISS index over an embedding folder the way autofaiss does: pick
// the index type from the vector count and a memory budget, train on a
// sample, add every vector in chunks streamed from the .npy files, tune the
// search parameter until a recall target is met, and write the index file plus
// `index_infos.json` next to it.
//
// Metric: inner product. CLIP embeddings are L2-normalised, so inner product
// is cosine similarity; vectors are indexed as read (not re-normalised).
//
// Choice rule (ChooseIndex), for N vectors of dimension d and a budget B bytes:
//  1. N < flat_threshold (10,000), or N < flat_if_fits_threshold (100,000) and
//     the flat index (4·d·N bytes) fits B: "Flat" — exact, nothing to tune.
//     Below flat_threshold nothing else is trainable, so a budget under 4·d·N
//     is INVALID_ARGUMENT.
//  2. Unless the index must be memory-mappable: HNSW with
//     M = floor((B / (4·N) − d) / 2) neighbours per node if M ≥ 8 (capped at
//     32): "HNSW{M}" — the graph (2·M int32 per vector) plus the raw vectors.
//  3. nlist: the power of two at or below 4·√N, clamped to [N/256, N/39]
//     (k-means wants 39..256 training points per centroid). FAISS suggests
//     4..16·√N; the low end is taken because k-means cost grows with nlist²
//     while nprobe tuning recovers the recall.
//     "IVF{nlist},Flat" if its estimated size fits B.
//  4. Otherwise product quantisation: the largest m in {256, 128, 64, 48, 32,
//     24, 16, 8, 4} that divides d (m < d) such that the estimate
//       N·(m + 8)            codes + 64-bit ids in the inverted lists
//     + nlist·d·4            coarse centroids
//     + d·256·4              PQ codebooks (256 centroids per sub-quantiser)
//     + d·d·4                OPQ rotation (when use_opq)
//     + nlist·64             per-list overhead
//     fits B: "[OPQ{m},]IVF{nlist},PQ{m}x8np" (no polysemous training: it only
//     speeds up Hamming filtering, and costs minutes). No m fits:
//     INVALID_ARGUMENT naming the minimum budget (m = 4 or the smallest m that
//     divides d).
//
// Training uses min(N, train_points_per_centroid·nlist) vectors (and at
// least 39·256 for the PQ codebooks) sampled without replacement with `seed`;
// each k-means (coarse and per PQ sub-quantiser, the latter on at most
// train_points_per_centroid·256 residuals) runs kmeans_iterations rounds.
// Vectors are added in add_chunk_rows chunks read straight from the files. Tuning: `num_tuning_queries` rows sampled from the data (with
// a different stream of the same seed); the exact top-k comes from a
// streaming flat scan over all files. Each query's own row is dropped from
// both the exact and the approximate list, so a query never counts as its own
// neighbour. recall@k is "1-recall@k" (FAISS's R@k): the fraction of queries
// whose exact nearest neighbour appears among the approximate top k. The
// stricter k-NN intersection |approx top-k ∩ exact top-k| / k is measured too
// and reported. nprobe (IVF) or efSearch (HNSW) is the smallest power of two
// reaching min_recall, refined by bisection; if even nlist / 4096 misses it the
// largest is kept and `recall_target_met` is false.
//
// Errors: NOT_FOUND (no embedding folder/files), INVALID_ARGUMENT (files
// disagree on d, no vectors, budget too small, bad options), DATA_LOSS
// (corrupt .npy), INTERNAL (FAISS failed: its message is kept; or the output
// cannot be written). Thread safety: BuildIndex is reentrant; FAISS uses the
// process's OpenMP threads.

#ifndef OCLIP_INDEX_INDEX_BUILDER_H_
#define OCLIP_INDEX_INDEX_BUILDER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "index/vector_index.h"

namespace oclip {
namespace index {

enum class IndexKind { kFlat, kHnsw, kIvfFlat, kIvfPq };

struct IndexChoiceOptions {
  int64_t flat_threshold = 10'000;
  int64_t flat_if_fits_threshold = 100'000;
  // HNSW is not memory-mappable: set this for indexes that are served mmapped.
  bool should_be_memory_mappable = false;
  bool use_opq = false;
};

// The index ChooseIndex settles on. Sizes in bytes.
struct IndexPlan {
  IndexKind kind = IndexKind::kFlat;
  std::string factory;      // FAISS index_factory string
  int nlist = 0;            // IVF lists (0 otherwise)
  int pq_m = 0;             // PQ sub-quantisers = code bytes per vector
  int hnsw_m = 0;           // HNSW neighbours per node
  int64_t code_size = 0;    // bytes per stored vector, ids excluded
  int64_t estimated_bytes = 0;
};

absl::StatusOr<IndexPlan> ChooseIndex(int64_t num_vectors, int dim,
                                      int64_t max_index_memory_usage,
                                      const IndexChoiceOptions& options = {});

struct IndexBuildOptions {
  // Folder holding `{prefix}_{i}.npy`, e.g. "<embeddings>/img_emb".
  std::string embeddings_folder;
  std::string file_prefix = "img_emb";
  // Output: the FAISS index and the JSON description of how it was built.
  std::string index_path;
  std::string index_infos_path;  // default: index_infos.json beside index_path
  int64_t max_index_memory_usage = int64_t{4} << 30;  // autofaiss's "4G"
  IndexChoiceOptions choice;
  double min_recall = 0.9;
  int recall_k = 10;
  int num_tuning_queries = 1000;
  int train_points_per_centroid = 40;
  int kmeans_iterations = 10;
  int64_t add_chunk_rows = 65'536;  // rows read and added per step
  uint64_t seed = 0;
};

// Everything index_infos.json holds.
struct IndexInfos {
  IndexPlan plan;
  std::string index_path;
  int64_t num_vectors = 0;
  int dim = 0;
  int64_t train_size = 0;
  int nprobe = 0;      // IVF: tuned value (0 otherwise)
  int ef_search = 0;   // HNSW: tuned value (0 otherwise)
  int recall_k = 10;
  double min_recall = 0;
  double recall_at_k = 0;               // 1-recall@k (see above)
  double intersection_recall_at_k = 0;  // |approx ∩ exact| / k
  bool recall_target_met = false;
  int num_tuning_queries = 0;
  int64_t max_index_memory_usage = 0;
  int64_t index_size_bytes = 0;  // of the written file
  double train_seconds = 0;
  double add_seconds = 0;
  double tune_seconds = 0;
  double build_seconds = 0;  // everything, writing included
};

std::string IndexInfosToJson(const IndexInfos& infos);
// DATA_LOSS if `json` is not what IndexInfosToJson writes.
absl::StatusOr<IndexInfos> IndexInfosFromJson(const std::string& json);

struct BuiltIndex {
  IndexInfos infos;
  // The in-memory index, tuned, as VectorIndex::Load would return it.
  std::unique_ptr<VectorIndex> index;
};

absl::StatusOr<BuiltIndex> BuildIndex(const IndexBuildOptions& options);

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_INDEX_INDEX_BUILDER_H_
