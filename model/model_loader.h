// One call from (--model, --pretrained) to a ready ClipModel in eval mode:
// resolve the config (registry name or JSON path), build the towers, then
// fill them from a checkpoint file or with seeded random weights.
//
// `pretrained` is "random", a checkpoint path (.safetensors, .bin, .pt), or a
// tag of the pretrained registry (model/pretrained.h: "openai",
// "laion2b_s34b_b79k", ...), downloaded into the cache on first use. A tag
// also sets the image normalization the weights were trained with; `openai`
// weights always run with QuickGELU, as in OpenCLIP, and other QuickGELU
// mismatches are logged as warnings. With an empty `model` and a checkpoint in
// OpenAI's layout (the TorchScript `.pt` files), the architecture is inferred
// from the tensor shapes.

#ifndef OCLIP_MODEL_MODEL_LOADER_H_
#define OCLIP_MODEL_MODEL_LOADER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/clip_model.h"
#include "model/pretrained.h"

namespace oclip {

struct LoadModelOptions {
  std::string model;                   // Registry name or JSON config path.
  std::string pretrained = "random";  // "random" or a checkpoint file.
  uint64_t seed = 0;                   // For "random".
  FetchOptions fetch;                  // For tags.
};

absl::StatusOr<std::shared_ptr<ClipModel>> LoadModel(const LoadModelOptions& options);

}  // namespace oclip

#endif  // OCLIP_MODEL_MODEL_LOADER_H_
