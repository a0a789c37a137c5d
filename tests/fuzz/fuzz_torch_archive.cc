// A torch.save checkpoint file: the zip container (LibTorch's stream reader
// plus oclip's own central-directory and CRC checks), the pickle, and the
// storages it names.
#include "model/checkpoint/torch_archive.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(torch_archive) {
  const std::string& path = oclip::fuzz::WriteScratchFile(data, size);
  auto is_archive = oclip::IsTorchSaveArchive(path);
  auto value = oclip::ReadTorchSaveArchive(path);
  if (value.ok()) (void)value->DebugString();
  return 0;
}
