// Samples from a folder tree of image files (an ImageNet-style class folder,
// a photo dump): every file whose extension is one of `extensions`
// (case-insensitive) anywhere below `root`, in byte-wise order of the path
// relative to root, so every run and every worker sees the same order.
// Names starting with '.' (hidden files, macOS "._x.jpg" droppings) are
// skipped; symbolic links are followed, each directory visited once.
//
// Sample: key = relative path without its extension ("cats/001"),
// image_path = root/relative path, caption = the sidecar "KEY.txt" next to
// the image when it exists (as stored, not trimmed).
//
// The tree is listed in Create(); files are read in Next(). Failures
// (counted): unreadable_file for a directory that cannot be listed (at
// Create) or a sidecar that exists but cannot be read (the sample is still
// delivered, without caption); missing_file / unreadable_file for an image
// that vanished or cannot be read (skipped).
// Create() errors: NOT_FOUND (no root), INVALID_ARGUMENT (root is not a
// directory, bad options).
//
// Thread safety: one thread at a time.

#ifndef OCLIP_DATA_IMAGE_FOLDER_H_
#define OCLIP_DATA_IMAGE_FOLDER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/local_file.h"
#include "data/sample_source.h"

namespace oclip {

struct ImageFolderOptions {
  std::string root;
  // Lower-case; matched case-insensitively.
  std::vector<std::string> extensions = {"jpg", "jpeg", "png", "webp", "bmp", "gif"};
  bool read_images = true;  // false: samples carry image_path only.
  bool read_captions = true;
  std::string caption_extension = "txt";
  // Files this worker takes: positions i (in the sorted order) with
  // i % num_workers == worker_index.
  int worker_index = 0;
  int num_workers = 1;
};

class ImageFolderSource : public SampleSource {
 public:
  static absl::StatusOr<std::unique_ptr<ImageFolderSource>> Create(ImageFolderOptions options);

  absl::StatusOr<bool> Next(Sample* sample) override;
  const SourceStats& stats() const override { return stats_; }

  // Every image path found, relative to root, sorted (all workers' files).
  const std::vector<std::string>& files() const { return files_; }

 private:
  explicit ImageFolderSource(ImageFolderOptions options) : options_(std::move(options)) {}
  void CountFailure(FailureKind kind);

  const ImageFolderOptions options_;
  std::vector<std::string> files_;
  size_t next_ = 0;
  bool done_ = false;
  ShardStats shard_;
  SourceStats stats_;
  WarningLimiter warnings_;
};

}  // namespace oclip

#endif  // OCLIP_DATA_IMAGE_FOLDER_H_
