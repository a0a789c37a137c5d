// A small, learnable image-caption data set written to disk for training
// tests (test support only): a CLIP model trained on it for a few hundred
// steps should lower its loss clearly and classify held-out images far above
// chance.
//
// K = 8 classes, colour x shape: {red, green, blue, yellow} x {square,
// circle}. Each image is image_size x image_size RGB: per-pixel grey noise as
// background, one filled shape of the class's colour (per-image colour
// jitter) at a random position and size (a quarter to a half of the side).
// Files, all under `dir` (created if missing):
//   train/NNNNNN.{jpg,png}  training images, JPEG and PNG alternately
//   train.csv               tab-separated, header "filepath\ttitle": absolute
//                           path and "a photo of a red square." (OpenCLIP's
//                           CsvDataset with --csv-separator "\t" defaults)
//   val/<class_folder>/NNNNNN.png   held-out images (an ImageFolder split;
//                           folder "red_square" for class "red square")
//   val.csv                 the held-out images with their captions
//                           (retrieval validation, --val-data)
//   classnames.txt          one class name per line, in sorted folder order
//                           (ImageFolder's class indices)
// Classes cycle with the sample index, so every class has
// floor(n / 8) or ceil(n / 8) samples. Deterministic for a seed; the held-out
// images come from a different stream than the training images.
//
// Errors: INVALID_ARGUMENT for counts < 1 or image_size < 16; file system
// and libvips errors with the path.

#ifndef OCLIP_TESTS_TRAINING_SYNTHETIC_DATA_H_
#define OCLIP_TESTS_TRAINING_SYNTHETIC_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace oclip::testing {

struct SyntheticDataset {
  std::string csv_path;                 // train.csv
  std::string val_csv_path;             // val.csv
  std::string imagenet_val_dir;         // val/ (ImageFolder)
  std::string classnames_path;          // classnames.txt
  std::vector<std::string> classnames;  // In class-index order.
};

absl::StatusOr<SyntheticDataset> WriteSyntheticDataset(const std::string& dir, int train_samples,
                                                       int val_samples, int image_size,
                                                       uint64_t seed);

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_TRAINING_SYNTHETIC_DATA_H_
