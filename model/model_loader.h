// One call from (--model, --pretrained) to a ready ClipModel in eval mode:
// resolve the config (registry name or JSON path), build the towers, then
// fill them from a checkpoint file or with seeded random weights.
//
// `pretrained` is "random" or a checkpoint path (.safetensors, .bin, .pt).
// With an empty `model` and a checkpoint in OpenAI's layout (the TorchScript
// `.pt` files), the architecture is inferred from the tensor shapes.

#ifndef OCLIP_MODEL_MODEL_LOADER_H_
#define OCLIP_MODEL_MODEL_LOADER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/clip_model.h"

namespace oclip {

struct LoadModelOptions {
  std::string model;                   // Registry name or JSON config path.
  std::string pretrained = "random";  // "random" or a checkpoint file.
  uint64_t seed = 0;                   // For "random".
};

absl::StatusOr<std::shared_ptr<ClipModel>> LoadModel(const LoadModelOptions& options);

}  // namespace oclip

#endif  // OCLIP_MODEL_MODEL_LOADER_H_
