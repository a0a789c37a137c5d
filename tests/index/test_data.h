// Synthetic CLIP-like embeddings for the index tests: `clusters` random unit
// centres in R^d, each with its own rank-`rank` subspace of variation (scale
// `spread`) plus a little isotropic noise, L2-normalised — clustered, with
// the low intrinsic dimension real embeddings have. Deterministic in `seed`.

#ifndef OCLIP_TESTS_INDEX_TEST_DATA_H_
#define OCLIP_TESTS_INDEX_TEST_DATA_H_

#include <cstdint>
#include <random>
#include <string>
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

// A fresh directory under the test's temporary directory.
std::string MakeTempDir(const std::string& name);

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_TESTS_INDEX_TEST_DATA_H_
