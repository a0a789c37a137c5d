// Reading checkpoint files and loading them, strictly, into a ClipModel.
//
// Formats, recognised by their bytes (not their extension):
//   - safetensors (`open_clip_model.safetensors`), memory-mapped;
//   - torch.save zip archives (`open_clip_pytorch_model.bin`, OpenCLIP
//     training checkpoints `{epoch, name, state_dict, optimizer}`), read by
//     torch_archive.h without executing any pickle code;
//   - TorchScript archives (the OpenAI `.pt` checkpoints).
//
// Loading follows OpenCLIP's load_checkpoint: a `module.` prefix (DDP) is
// stripped, buffers that OpenCLIP recomputes or drops are ignored
// (`text.transformer.embeddings.position_ids`, TorchScript's
// `input_resolution`/`context_length`/`vocab_size`), and a positional
// embedding whose grid or length differs from the model's is resized as
// OpenCLIP resizes it (bicubic with antialias for images, linear for text).
// Then every key must match by name and shape. The whole checkpoint is checked
// before any parameter is written: a failed load leaves the model unchanged.
//
// Errors: NOT_FOUND (no file), DATA_LOSS (truncated/corrupted file),
// INVALID_ARGUMENT (not a checkpoint, or a checkpoint of another model: the
// message lists missing, unexpected and mis-shaped keys and names the file).

#ifndef OCLIP_MODEL_CHECKPOINT_CHECKPOINT_H_
#define OCLIP_MODEL_CHECKPOINT_CHECKPOINT_H_

#include <map>
#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "model/clip_model.h"
#include "model/config.h"

namespace oclip {

using StateDict = std::map<std::string, torch::Tensor>;

enum class CheckpointFormat { kSafetensors, kTorchSave, kTorchScript };
const char* CheckpointFormatName(CheckpointFormat format);

struct Checkpoint {
  CheckpointFormat format;
  // Keys as stored (prefixes not yet stripped). Tensors live on the CPU;
  // safetensors tensors may be views of the memory-mapped file.
  StateDict state_dict;
};

// Sniffs the format and reads the model weights (for training checkpoints,
// the `state_dict` entry).
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path);

// Normalizes `state_dict` (prefix, ignored keys, positional-embedding resize)
// for `model` and copies it in; `source` names the file in error messages.
absl::Status LoadStateDict(ClipModel& model, StateDict state_dict, const std::string& source);

// ReadCheckpoint + LoadStateDict.
absl::Status LoadCheckpoint(ClipModel& model, const std::string& path);

// OpenCLIP's build_model_from_openai_state_dict: the architecture of an
// OpenAI-layout checkpoint inferred from its tensor shapes (heads assume a
// head width of 64, as OpenAI's models have). INVALID_ARGUMENT if the keys
// are not an OpenAI-layout CLIP.
absl::StatusOr<ModelConfig> InferConfigFromStateDict(const StateDict& state_dict);

}  // namespace oclip

#endif  // OCLIP_MODEL_CHECKPOINT_CHECKPOINT_H_
