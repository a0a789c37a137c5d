// Seeded random initialisation of a ClipModel (`--pretrained random`): for
// tests, benchmarks and training from scratch. It follows OpenCLIP's init
// scales (normal 0.02 token embeddings, 0.01 text positions, width^-0.5 class
// token / positions / projections, fan_in^-0.5 weights, unit norms, zero
// biases, logit_scale = ln(1/0.07)); it cannot reproduce PyTorch's random
// stream, so the values differ from a Python-initialised model.
//
// Deterministic for a given seed, independent of the global generator.

#ifndef OCLIP_MODEL_INIT_H_
#define OCLIP_MODEL_INIT_H_

#include <cstdint>

#include "model/clip_model.h"

namespace oclip {

void InitializeRandom(ClipModel& model, uint64_t seed);

}  // namespace oclip

#endif  // OCLIP_MODEL_INIT_H_
