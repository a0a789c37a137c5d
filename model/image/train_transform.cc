#include "model/image/train_transform.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/image/pil_resample.h"

namespace oclip {
namespace {

// Uniform in [low, high): 53 random bits, as torch's uniform_ on doubles.
double Uniform(std::mt19937_64& rng, double low, double high) {
  const double unit = static_cast<double>(rng() >> 11) * 0x1.0p-53;
  return low + (high - low) * unit;
}

// Uniform integer in [0, n), n > 0, without modulo bias.
int64_t UniformInt(std::mt19937_64& rng, int64_t n) {
  const uint64_t range = static_cast<uint64_t>(n);
  // The largest multiple of `range` representable; draws at or above it are
  // redrawn so that every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t draw;
  do {
    draw = rng();
  } while (draw >= limit);
  return static_cast<int64_t>(draw % range);
}

absl::Status ValidateCropOptions(const RandomResizedCropOptions& crop) {
  if (!(crop.scale_min > 0 && crop.scale_min <= crop.scale_max) ||
      !(crop.ratio_min > 0 && crop.ratio_min <= crop.ratio_max)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RandomResizedCrop needs 0 < scale_min <= scale_max and 0 < ratio_min <= ratio_max, got "
        "scale (",
        crop.scale_min, ", ", crop.scale_max, "), ratio (", crop.ratio_min, ", ", crop.ratio_max,
        ")"));
  }
  return absl::OkStatus();
}

// Image.crop(box) of a box inside the image: a pixel copy.
Image8 CropPixels(const Image8& in, const CropBox& box) {
  Image8 out;
  out.width = box.width;
  out.height = box.height;
  out.bands = in.bands;
  const size_t row_bytes = static_cast<size_t>(box.width) * in.bands;
  out.pixels.resize(row_bytes * box.height);
  for (int y = 0; y < box.height; ++y) {
    std::memcpy(out.pixels.data() + y * row_bytes,
                in.row(box.top + y) + static_cast<size_t>(box.left) * in.bands, row_bytes);
  }
  return out;
}

}  // namespace

CropBox SampleRandomResizedCrop(int width, int height, const RandomResizedCropOptions& crop,
                                std::mt19937_64& rng) {
  const double area = static_cast<double>(width) * height;
  const double log_ratio_min = std::log(crop.ratio_min);
  const double log_ratio_max = std::log(crop.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * Uniform(rng, crop.scale_min, crop.scale_max);
    const double aspect_ratio = std::exp(Uniform(rng, log_ratio_min, log_ratio_max));
    const int64_t w = RoundHalfToEven(std::sqrt(target_area * aspect_ratio));
    const int64_t h = RoundHalfToEven(std::sqrt(target_area / aspect_ratio));
    if (0 < w && w <= width && 0 < h && h <= height) {
      CropBox box;
      box.width = static_cast<int>(w);
      box.height = static_cast<int>(h);
      // torchvision draws the row (i) first, then the column (j).
      box.top = static_cast<int>(UniformInt(rng, height - h + 1));
      box.left = static_cast<int>(UniformInt(rng, width - w + 1));
      return box;
    }
  }
  // The central crop, its aspect ratio clamped to the allowed range.
  const double in_ratio = static_cast<double>(width) / height;
  CropBox box;
  if (in_ratio < crop.ratio_min) {
    box.width = width;
    box.height = static_cast<int>(RoundHalfToEven(width / crop.ratio_min));
  } else if (in_ratio > crop.ratio_max) {
    box.height = height;
    box.width = static_cast<int>(RoundHalfToEven(height * crop.ratio_max));
  } else {
    box.width = width;
    box.height = height;
  }
  // Rounding never leaves the image (width / ratio_min < height here, and
  // likewise for the other case), but a box must not be empty either.
  box.width = std::clamp(box.width, 1, width);
  box.height = std::clamp(box.height, 1, height);
  box.top = (height - box.height) / 2;
  box.left = (width - box.width) / 2;
  return box;
}

absl::Status PreprocessTrainImageBytes(absl::string_view bytes, const PreprocessOptions& options,
                                       const RandomResizedCropOptions& crop, std::mt19937_64& rng,
                                       float* out) {
  OCLIP_RETURN_IF_ERROR(ValidateCropOptions(crop));
  if (options.image_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("image_size must be positive, got ", options.image_size));
  }
  PreprocessOptions decode_options = options;
  decode_options.fast_jpeg_shrink = false;  // The box is drawn on the full-size image.
  OCLIP_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImageBytes(bytes, decode_options));
  const CropBox box =
      SampleRandomResizedCrop(decoded.pixels.width, decoded.pixels.height, crop, rng);
  DecodedImage cropped;
  cropped.mode = decoded.mode;
  if (box.left == 0 && box.top == 0 && box.width == decoded.pixels.width &&
      box.height == decoded.pixels.height) {
    cropped.pixels = std::move(decoded.pixels);
  } else {
    cropped.pixels = CropPixels(decoded.pixels, box);
  }
  const int size = options.image_size;
  CropRect whole;
  whole.width = whole.height = size;
  return ResizeCropNormalize(std::move(cropped), size, size, whole, options, out);
}

}  // namespace oclip
