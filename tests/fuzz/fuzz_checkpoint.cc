// A checkpoint file of any kind, the path a downloaded or user-given
// `--pretrained` file takes through ReadCheckpoint: format sniffing,
// safetensors, torch.save archives, and the checks that decide whether a zip
// archive is a TorchScript archive to hand to torch::jit::load.
//
// torch::jit::load itself (uninstrumented LibTorch, its own zip reader and
// unpickler) is not fuzzed here: a zip that ReadCheckpoint would pass to it
// stops after the checks. A crash inside it is LibTorch's, not oclip's.
#include <cstring>

#include "model/checkpoint/checkpoint.h"
#include "model/checkpoint/torch_archive.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(checkpoint) {
  const std::string& path = oclip::fuzz::WriteScratchFile(data, size);
  const bool zip = size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0;
  if (zip) {
    absl::StatusOr<bool> torch_save = oclip::IsTorchSaveArchive(path);
    // Not a torch.save archive: ReadCheckpoint would call torch::jit::load.
    if (torch_save.ok() && !*torch_save) return 0;
  }
  auto checkpoint = oclip::ReadCheckpoint(path);
  if (checkpoint.ok()) {
    OCLIP_FUZZ_CHECK(checkpoint->format != oclip::CheckpointFormat::kTorchScript);
    for (const auto& [name, tensor] : checkpoint->state_dict) (void)tensor.numel();
  }
  return 0;
}
