// Reader for the archives Python's `torch.save` writes (PyTorch >= 1.6).
//
// Such an archive is a zip file holding `<name>/data.pkl` (a pickle of the
// saved object), `<name>/data/<key>` (the raw little-endian bytes of each
// storage) and `<name>/version`. LibTorch's `torch::pickle_load` cannot apply
// the `_metadata` attribute that `torch.save(model.state_dict())` sets on its
// OrderedDict, so this reader runs oclip's own restricted unpickler
// (model/checkpoint/pickle.h) over data.pkl, resolving each persistent id
// ('storage', StorageType, key, location, numel) to the record `data/<key>`.
// Every tensor is on the CPU whatever its saved location; tensors that viewed
// one storage in Python share one storage here. The zip container is read by
// LibTorch's caffe2::serialize::PyTorchStreamReader.
//
// Errors name the file: NOT_FOUND for a missing file; DATA_LOSS for anything
// corrupt or truncated (not a zip, a CRC-32 mismatch, a missing `data/<key>`
// record, a record whose size does not match its storage, a malformed pickle);
// INVALID_ARGUMENT for a well-formed archive this reader refuses (a
// TorchScript archive, a pickle naming a global outside the whitelist such as
// `posix.system`, a big-endian archive). No exception escapes.
//
// Memory: the whole archive's storages are read into memory (one allocation
// per storage, no further copy). The zip layer trusts the record sizes of the
// central directory only as far as miniz checks them (stored records, which is
// what torch.save writes, must lie inside the file); the zip directory itself
// is read only after checking that it lies inside the file.
//
// Thread safety: the functions keep no state; the returned tree is immutable
// and may be shared between threads.

#ifndef OCLIP_MODEL_CHECKPOINT_TORCH_ARCHIVE_H_
#define OCLIP_MODEL_CHECKPOINT_TORCH_ARCHIVE_H_

#include <string>

#include "absl/status/statusor.h"
#include "model/checkpoint/pickle.h"

namespace oclip {

struct TorchArchiveOptions {
  // Check every record read (data.pkl and each storage) against the CRC-32
  // in the zip directory: DATA_LOSS on a mismatch. LibTorch's zip reader does
  // not check them. Costs one pass over the bytes (a few GB/s).
  bool verify_checksums = true;
};

// Loads the object saved by `torch.save(obj, path)`: for a state dict, a
// kDict of name -> kTensor in the saved order; for a training checkpoint,
// the dict of epoch, name, state_dict, optimizer, ...
absl::StatusOr<PyValue> ReadTorchSaveArchive(const std::string& path);
absl::StatusOr<PyValue> ReadTorchSaveArchive(
    const std::string& path, const TorchArchiveOptions& options);

// True if the file starts with the zip magic and is a torch.save archive (it
// has a data.pkl record and, unlike a TorchScript archive from torch.jit.save,
// no constants.pkl or code/ records). False for any other file, including a
// TorchScript archive or a safetensors file. NOT_FOUND if the file cannot be
// opened, DATA_LOSS if it starts like a zip file but cannot be read as one.
absl::StatusOr<bool> IsTorchSaveArchive(const std::string& path);

}  // namespace oclip

#endif  // OCLIP_MODEL_CHECKPOINT_TORCH_ARCHIVE_H_
