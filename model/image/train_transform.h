// OpenCLIP's train transform for one image (open_clip.transform.image_transform
// with is_train=True and the default augmentation config):
//   RandomResizedCrop(image_size, scale=(0.9, 1.0), interpolation=BICUBIC),
//   convert("RGB"), ToTensor(), Normalize(mean, std)
// with the pixels PIL produces: the image is decoded as the eval transform
// decodes it (model/image/preprocess.h), the sampled box is cut out (a pixel
// copy, as PIL's Image.crop), resized to image_size x image_size with PIL's
// bicubic (premultiplied for alpha, nearest neighbour for palette images, in
// CMYK for CMYK JPEGs) and converted, scaled and normalized into `out`
// (3 * image_size * image_size floats, CHW).
//
// The crop box is drawn exactly as torchvision's RandomResizedCrop.get_params
// draws it, from `rng` instead of torch's generator: up to 10 attempts of
// area = uniform(scale) * W * H, ratio = exp(uniform(log ratio_min,
// log ratio_max)), w = round(sqrt(area * ratio)), h = round(sqrt(area /
// ratio)) (Python's round, half to even), accepted when 0 < w <= W and
// 0 < h <= H and then placed at a uniform position; otherwise the central
// crop of the whole image with its aspect clamped to [ratio_min, ratio_max].
// The draws are made here (53-bit uniform doubles, unbiased integers) rather
// than by <random>'s distributions, so that a seed gives the same boxes with
// any standard library. PreprocessTrainImageBytes consumes `rng` only through
// one SampleRandomResizedCrop(width, height, crop, rng) call on the decoded
// size.
//
// `fast_jpeg_shrink` is ignored here: the box is sampled on the full-size
// image. Errors: those of PreprocessImageBytes, and INVALID_ARGUMENT for crop
// options that are not 0 < scale_min <= scale_max and 0 < ratio_min <=
// ratio_max. Thread-safe for distinct `rng`s.

#ifndef OCLIP_MODEL_IMAGE_TRAIN_TRANSFORM_H_
#define OCLIP_MODEL_IMAGE_TRAIN_TRANSFORM_H_

#include <cstdint>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "model/image/preprocess.h"

namespace oclip {

struct RandomResizedCropOptions {
  // OpenCLIP's defaults (torchvision's are scale (0.08, 1.0)).
  double scale_min = 0.9, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
};

// A box of the source image, in pixels: columns [left, left + width), rows
// [top, top + height). torchvision's (i, j, h, w) = (top, left, height, width).
struct CropBox {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

// torchvision's RandomResizedCrop.get_params for a width x height image
// (both > 0) and valid options. The box always lies inside the image.
CropBox SampleRandomResizedCrop(int width, int height, const RandomResizedCropOptions& crop,
                                std::mt19937_64& rng);

absl::Status PreprocessTrainImageBytes(absl::string_view bytes, const PreprocessOptions& options,
                                       const RandomResizedCropOptions& crop, std::mt19937_64& rng,
                                       float* out);

}  // namespace oclip

#endif  // OCLIP_MODEL_IMAGE_TRAIN_TRANSFORM_H_
