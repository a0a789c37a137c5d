#include "index/synthetic_embeddings.h"

#include <cmath>

namespace oclip {
namespace index {
namespace {

void Normalize(float* v, int d) {
  double norm = 0;
  for (int j = 0; j < d; ++j) norm += double{v[j]} * v[j];
  const float inv = static_cast<float>(1.0 / std::sqrt(norm));
  for (int j = 0; j < d; ++j) v[j] *= inv;
}

}  // namespace

ClusteredGenerator::ClusteredGenerator(int dim, int clusters, int rank, float spread,
                                       uint64_t seed)
    : dim_(dim), clusters_(clusters), rank_(rank), spread_(spread), rng_(seed) {
  std::normal_distribution<float> gauss;
  centers_.resize(static_cast<size_t>(clusters) * dim);
  for (float& x : centers_) x = gauss(rng_);
  for (int c = 0; c < clusters; ++c) Normalize(&centers_[static_cast<size_t>(c) * dim], dim);
  basis_.resize(static_cast<size_t>(clusters) * rank * dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  for (float& x : basis_) x = gauss(rng_) * scale;
}

std::vector<float> ClusteredGenerator::Sample(int64_t n) {
  std::normal_distribution<float> gauss;
  std::uniform_int_distribution<int> pick(0, clusters_ - 1);
  const float noise = 0.1f * spread_ / std::sqrt(static_cast<float>(dim_));
  std::vector<float> out(static_cast<size_t>(n) * dim_);
  for (int64_t i = 0; i < n; ++i) {
    float* v = &out[static_cast<size_t>(i) * dim_];
    const int c = pick(rng_);
    const float* center = &centers_[static_cast<size_t>(c) * dim_];
    for (int j = 0; j < dim_; ++j) v[j] = center[j] + noise * gauss(rng_);
    for (int r = 0; r < rank_; ++r) {
      const float a = spread_ * gauss(rng_);
      const float* b = &basis_[(static_cast<size_t>(c) * rank_ + r) * dim_];
      for (int j = 0; j < dim_; ++j) v[j] += a * b[j];
    }
    Normalize(v, dim_);
  }
  return out;
}

}  // namespace index
}  // namespace oclip
