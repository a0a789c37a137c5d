// Synthetic CLIP-like embeddings, for index benchmarks and tests: `clusters`
// random unit centres in R^d, each with its own rank-`rank` subspace of
// variation (scale `spread`) plus a little isotropic noise, L2-normalised —
// clustered, with the low intrinsic dimension real embeddings have, so that
// compressed indexes meet the trade-offs they meet on real data.
// Deterministic in `seed`.
//
// Thread safety: one thread at a time (Sample advances the generator).

#ifndef OCLIP_INDEX_SYNTHETIC_EMBEDDINGS_H_
#define OCLIP_INDEX_SYNTHETIC_EMBEDDINGS_H_

#include <cstdint>
#include <random>
#include <vector>

namespace oclip {
namespace index {

class ClusteredGenerator {
 public:
  ClusteredGenerator(int dim, int clusters, int rank, float spread, uint64_t seed);

  // [n, dim] row-major, unit rows.
  std::vector<float> Sample(int64_t n);
  int dim() const { return dim_; }

 private:
  int dim_, clusters_, rank_;
  float spread_;
  std::mt19937_64 rng_;
  std::vector<float> centers_;  // [clusters, dim]
  std::vector<float> basis_;    // [clusters, rank, dim]
};

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_INDEX_SYNTHETIC_EMBEDDINGS_H_
