// Reader and writer for the safetensors format (Hugging Face): an 8-byte
// little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets}, then the raw little-endian data.
//
// The reader memory-maps the file and hands out byte views; it validates the
// whole header up front (offsets inside the data section, sizes consistent
// with dtype x shape, no overlap) so that a truncated or corrupted file is
// rejected with DATA_LOSS before any tensor is touched. Views are valid for
// the reader's lifetime. The reader is immutable after Open: thread-safe.

#ifndef OCLIP_CORE_SAFETENSORS_H_
#define OCLIP_CORE_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/mapped_file.h"

namespace oclip {

// Element types of safetensors (names as in the header: "F32", "I64", ...).
enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element, and the header spelling.
size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);

struct TensorView {
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;  // Not aligned in general.
  size_t size_bytes;

  int64_t num_elements() const;
};

class SafetensorsReader {
 public:
  // NOT_FOUND for a missing file; DATA_LOSS for a malformed or truncated one.
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(
      const std::string& path);

  // Tensor names in file order of their data offsets.
  const std::vector<std::string>& names() const { return names_; }
  bool Contains(const std::string& name) const {
    return tensors_.count(name) > 0;
  }
  // NOT_FOUND naming the file and the key when absent.
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  // The optional string-to-string "__metadata__" entry.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  explicit SafetensorsReader(std::unique_ptr<MappedFile> file)
      : file_(std::move(file)) {}
  absl::Status ParseHeader();

  std::unique_ptr<MappedFile> file_;
  std::vector<std::string> names_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: `data` must hold num_elements(shape) * DTypeSize bytes.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> data;
};

// Writes `tensors` (in the given order) to `path` via a temporary file and an
// atomic rename, so a crash never leaves a half-written file under `path`.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace oclip

#endif  // OCLIP_CORE_SAFETENSORS_H_
