// Embedding folders in clip-retrieval's layout, read in row ranges.
//
// `clip inference` writes one folder per modality, `img_emb/img_emb_{i}.npy`
// and `text_emb/text_emb_{i}.npy`, each a C-order little-endian float32
// ('<f4') or float16 ('<f2') array of shape [n_i, d]; row r of the
// concatenation over i = 0, 1, 2, ... is vector id r everywhere in index/.
// core/npy reads float32 only and loads a whole file, so this unit parses the
// .npy header itself and memory-maps each file only while rows are copied out
// of it: building an index over billions of vectors never holds them all.
//
// Errors: NOT_FOUND (no such folder, or no `{prefix}_{i}.npy` in it),
// INVALID_ARGUMENT (files disagree on d, or hold no rows at all), DATA_LOSS
// (a file that is not a 2-D '<f4'/'<f2' C-order .npy, or is truncated).
// Thread safety: an EmbeddingFiles is immutable after Open(); ReadRows may be
// called from several threads at once.

#ifndef OCLIP_INDEX_EMBEDDING_FILES_H_
#define OCLIP_INDEX_EMBEDDING_FILES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/npy.h"

namespace oclip {
namespace index {

// What a .npy header says about a 2-D float array.
struct NpyMatrixHeader {
  NpyDtype dtype = NpyDtype::kFloat32;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t data_offset = 0;  // bytes from the start of the file to row 0
};

// Parses the header of a .npy file (format 1.0 or 2.0) holding a C-order
// 2-D '<f4' or '<f2' array and checks that the file size matches the shape.
// NOT_FOUND if missing, DATA_LOSS otherwise.
absl::StatusOr<NpyMatrixHeader> ReadNpyMatrixHeader(const std::string& path);

class EmbeddingFiles {
 public:
  struct File {
    std::string path;
    NpyMatrixHeader header;
    int64_t first_row = 0;  // global id of the file's row 0
  };

  // Lists `{folder}/{prefix}_{i}.npy` ordered by the integer i (so _10 comes
  // after _9) and reads their headers. `prefix` is "img_emb" or "text_emb"
  // for clip-retrieval's folders; `folder` is e.g. "<out>/img_emb".
  static absl::StatusOr<std::unique_ptr<EmbeddingFiles>> Open(
      const std::string& folder, const std::string& prefix);

  // Same, for an explicit ordered list of files.
  static absl::StatusOr<std::unique_ptr<EmbeddingFiles>> OpenFiles(
      std::vector<std::string> paths);

  int64_t rows() const { return rows_; }
  int dim() const { return dim_; }
  const std::vector<File>& files() const { return files_; }

  // Copies rows [start, start + count) as float32 into `out`, which must hold
  // count * dim() floats. INVALID_ARGUMENT if the range is outside [0, rows()).
  absl::Status ReadRows(int64_t start, int64_t count, float* out) const;

  // Copies the rows with the given global ids (any order, duplicates allowed)
  // into `out`, row i of `out` = row ids[i]; `out` holds ids.size() * dim().
  absl::Status ReadRowsById(absl::Span<const int64_t> ids, float* out) const;

 private:
  EmbeddingFiles(std::vector<File> files, int64_t rows, int dim)
      : files_(std::move(files)), rows_(rows), dim_(dim) {}

  std::vector<File> files_;
  int64_t rows_;
  int dim_;
};

}  // namespace index
}  // namespace oclip

#endif  // OCLIP_INDEX_EMBEDDING_FILES_H_
