// OpenCLIP's train transform (model/image/train_transform.h): the crop boxes
// torchvision's RandomResizedCrop draws, and the pixels PIL produces for a
// box (against Python OpenCLIP's reference tensors and against PIL itself).

#include "model/image/train_transform.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "model/image/preprocess.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/model/reference.h"

namespace oclip::testing {
namespace {

// Debian's interpreter, the one with python3-pil.
constexpr char kPython[] = "/usr/bin/python3";

const char* const kImages[] = {"landscape.jpg", "portrait.png", "alpha.png", "gray.jpg",
                               "tiny.png",      "wide.webp",    "CLIP.png"};

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string ImageBytes(const std::string& name) {
  return ReadBytes(ReferencePath("images/" + name));
}

bool Inside(const CropBox& box, int width, int height) {
  return box.left >= 0 && box.top >= 0 && box.width > 0 && box.height > 0 &&
         box.left + box.width <= width && box.top + box.height <= height;
}

// Whether some area and ratio allowed by `crop` round to this box: with
// w = round(sqrt(A r)) and h = round(sqrt(A / r)), A lies in
// [(w - .5)(h - .5), (w + .5)(h + .5)] and r in [(w - .5) / (h + .5),
// (w + .5) / (h - .5)]; both ranges must meet the allowed ones.
bool WithinBounds(const CropBox& box, int width, int height, const RandomResizedCropOptions& crop) {
  const double w = box.width, h = box.height, area = static_cast<double>(width) * height;
  const bool area_ok = (w - 0.5) * (h - 0.5) <= crop.scale_max * area &&
                       (w + 0.5) * (h + 0.5) >= crop.scale_min * area;
  const bool ratio_ok =
      (w - 0.5) / (h + 0.5) <= crop.ratio_max && (w + 0.5) / (h - 0.5) >= crop.ratio_min;
  return area_ok && ratio_ok;
}

// torchvision's fallback box, written out from get_params' code.
CropBox FallbackBox(int width, int height, const RandomResizedCropOptions& crop) {
  const double in_ratio = static_cast<double>(width) / height;
  CropBox box{0, 0, width, height};
  if (in_ratio < crop.ratio_min) {
    box.height = static_cast<int>(RoundHalfToEven(width / crop.ratio_min));
  } else if (in_ratio > crop.ratio_max) {
    box.width = static_cast<int>(RoundHalfToEven(height * crop.ratio_max));
  }
  box.top = (height - box.height) / 2;
  box.left = (width - box.width) / 2;
  return box;
}

bool SameBox(const CropBox& a, const CropBox& b) {
  return a.left == b.left && a.top == b.top && a.width == b.width && a.height == b.height;
}

// Every box is inside the image and either a draw within the scale and ratio
// bounds or torchvision's fallback (300x500 is narrower than 3:4, so with
// OpenCLIP's scale no draw fits and every box is the fallback).
TEST(RandomResizedCropTest, BoxesStayInsideTheImageAndWithinScaleAndRatio) {
  const std::vector<std::pair<int, int>> sizes = {{640, 480}, {300, 500}, {224, 224}, {20, 12},
                                                  {256, 256}, {500, 400}, {1, 1},     {3, 4}};
  RandomResizedCropOptions torchvision_default;
  torchvision_default.scale_min = 0.08;
  for (const RandomResizedCropOptions& crop : {RandomResizedCropOptions(), torchvision_default}) {
    std::mt19937_64 rng(1234);
    for (const auto& [width, height] : sizes) {
      std::set<std::tuple<int, int, int, int>> distinct;
      for (int i = 0; i < 2000; ++i) {
        const CropBox box = SampleRandomResizedCrop(width, height, crop, rng);
        ASSERT_TRUE(Inside(box, width, height)) << width << "x" << height << ": " << box.left << ","
                                                << box.top << " " << box.width << "x" << box.height;
        ASSERT_TRUE(WithinBounds(box, width, height, crop) ||
                    SameBox(box, FallbackBox(width, height, crop)))
            << width << "x" << height << " scale_min " << crop.scale_min << ": " << box.width << "x"
            << box.height;
        distinct.insert({box.left, box.top, box.width, box.height});
      }
      // Random sizes and positions, not one box (images of a few pixels
      // have only a few possible boxes; with OpenCLIP's scale, images
      // outside the ratio range always get the fallback).
      if (crop.scale_min < 0.5 && width * height > 100) {
        EXPECT_GT(distinct.size(), 20u) << width << "x" << height;
      }
    }
  }
}

// With OpenCLIP's scale (0.9, 1.0) on a square, a draw fits only when
// scale * max(r, 1 / r) <= 1: about 18% of draws, so all ten attempts fail
// (and the whole image is used) for about 0.82^10 = 14% of samples. Accepted
// boxes are placed uniformly: left / (1000 - width) averages 1/2.
TEST(RandomResizedCropTest, SamplesAreaAndPositionAsTorchvision) {
  std::mt19937_64 rng(7);
  const RandomResizedCropOptions crop;
  int whole = 0, placed = 0;
  double mean_scale = 0, mean_position = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    const CropBox box = SampleRandomResizedCrop(1000, 1000, crop, rng);
    if (box.width == 1000 && box.height == 1000) {
      ++whole;
      continue;
    }
    mean_scale += static_cast<double>(box.width) * box.height / 1e6;
    if (box.width < 1000) {
      mean_position += static_cast<double>(box.left) / (1000 - box.width);
      ++placed;
    }
  }
  mean_scale /= n - whole;
  mean_position /= placed;
  EXPECT_GT(whole, n * 0.10);
  EXPECT_LT(whole, n * 0.18);
  // Accepted draws favour larger scales' complement: area <= 1e6 / max(r, 1/r).
  EXPECT_GT(mean_scale, 0.9 - 1e-3);
  EXPECT_LT(mean_scale, 0.95);
  EXPECT_NEAR(mean_position, 0.5, 0.03);
}

// No attempt can succeed: torchvision falls back to the central crop with the
// aspect ratio clamped, offsets floored, sizes rounded half to even.
TEST(RandomResizedCropTest, FallsBackToTheClampedCentralCrop) {
  std::mt19937_64 rng(99);
  const RandomResizedCropOptions crop;
  for (int i = 0; i < 50; ++i) {
    // Wide: h = 10, w = round(10 * 4 / 3) = 13, j = (1000 - 13) // 2 = 493.
    const CropBox wide = SampleRandomResizedCrop(1000, 10, crop, rng);
    EXPECT_EQ(std::make_tuple(wide.left, wide.top, wide.width, wide.height),
              std::make_tuple(493, 0, 13, 10));
    // Tall: w = 10, h = round(10 / 0.75) = 13, i = (1000 - 13) // 2 = 493.
    const CropBox tall = SampleRandomResizedCrop(10, 1000, crop, rng);
    EXPECT_EQ(std::make_tuple(tall.left, tall.top, tall.width, tall.height),
              std::make_tuple(0, 493, 10, 13));
    // 900x300 (wide.webp): w = round(300 * 4 / 3) = 400, j = 250.
    const CropBox webp = SampleRandomResizedCrop(900, 300, crop, rng);
    EXPECT_EQ(std::make_tuple(webp.left, webp.top, webp.width, webp.height),
              std::make_tuple(250, 0, 400, 300));
  }
  // round(5 / 2) = round(2.5) = 2 in Python (std::round gives 3); i = 49.
  RandomResizedCropOptions narrow;
  narrow.ratio_min = 2;
  narrow.ratio_max = 4;
  const CropBox half = SampleRandomResizedCrop(5, 100, narrow, rng);
  EXPECT_EQ(std::make_tuple(half.left, half.top, half.width, half.height),
            std::make_tuple(0, 49, 5, 2));
  // A scale above 1 never fits: the whole image when its ratio is allowed.
  RandomResizedCropOptions too_big;
  too_big.scale_min = 2;
  too_big.scale_max = 3;
  const CropBox all = SampleRandomResizedCrop(640, 480, too_big, rng);
  EXPECT_EQ(std::make_tuple(all.left, all.top, all.width, all.height),
            std::make_tuple(0, 0, 640, 480));
}

// The transform's output for `name` with `seed`.
std::vector<float> Transform(const std::string& name, uint64_t seed,
                             const RandomResizedCropOptions& crop = {}, int size = 64) {
  PreprocessOptions options;
  options.image_size = size;
  std::vector<float> out(3 * size * size);
  std::mt19937_64 rng(seed);
  const absl::Status status =
      PreprocessTrainImageBytes(ImageBytes(name), options, crop, rng, out.data());
  EXPECT_TRUE(status.ok()) << name << ": " << status;
  return out;
}

TEST(TrainTransformTest, IsDeterministicForASeed) {
  for (const char* image : {"landscape.jpg", "alpha.png"}) {
    EXPECT_EQ(Transform(image, 42), Transform(image, 42)) << image;
    EXPECT_NE(Transform(image, 42), Transform(image, 43)) << image;
  }
  // And a stream of draws continues deterministically across calls.
  PreprocessOptions options;
  options.image_size = 32;
  const std::string bytes = ImageBytes("landscape.jpg");
  std::vector<std::vector<float>> first, second;
  for (auto* runs : {&first, &second}) {
    std::mt19937_64 rng(5);
    for (int i = 0; i < 3; ++i) {
      std::vector<float> out(3 * 32 * 32);
      ASSERT_TRUE(PreprocessTrainImageBytes(bytes, options, {}, rng, out.data()).ok());
      runs->push_back(out);
    }
  }
  EXPECT_EQ(first, second);
  EXPECT_NE(first[0], first[1]);
}

TEST(TrainTransformTest, ValuesLieInTheNormalizedRange) {
  const PreprocessOptions options;
  for (const char* image : kImages) {
    const std::vector<float> out = Transform(image, 3, {}, 224);
    const int plane = 224 * 224;
    for (int c = 0; c < 3; ++c) {
      const float low = (0.0f - options.mean[c]) / options.std[c];
      const float high = (1.0f - options.mean[c]) / options.std[c];
      const auto [min, max] =
          std::minmax_element(out.begin() + c * plane, out.begin() + (c + 1) * plane);
      EXPECT_GE(*min, low - 1e-6f) << image << " channel " << c;
      EXPECT_LE(*max, high + 1e-6f) << image << " channel " << c;
      EXPECT_LT(*min, *max) << image << " channel " << c << " is constant";
    }
  }
}

// A box equal to the whole square image (scale 1, ratio 1) makes the train
// transform a plain resize to image_size x image_size, which is what Python
// OpenCLIP's eval transform computed for the square alpha.png (256x256 RGBA:
// the premultiplied path): same gate as the eval transform's parity test.
TEST(TrainTransformTest, WholeImageBoxMatchesOpenClipResize) {
  RandomResizedCropOptions whole;
  whole.scale_min = whole.scale_max = 1;
  whole.ratio_min = whole.ratio_max = 1;
  for (int size : {56, 64, 224}) {
    const std::string key = std::to_string(size) + "/openai/alpha.png";
    torch::Tensor expected = LoadReferenceTensor("preprocessed.safetensors", key);
    const std::vector<float> out = Transform("alpha.png", 11, whole, size);
    torch::Tensor actual =
        torch::from_blob(const_cast<float*>(out.data()), {3, size, size}).clone();
    const PreprocessOptions options;
    torch::Tensor std =
        torch::tensor({options.std[0], options.std[1], options.std[2]}).view({3, 1, 1});
    torch::Tensor diff = ((actual - expected) * std * 255).abs();
    const double max = diff.max().item<double>(), mean = diff.mean().item<double>();
    std::printf("[ pixels   ] train whole box %s: max %.2f/255, mean %.3f/255\n", key.c_str(), max,
                mean);
    EXPECT_LE(max, 2.0) << key;
    EXPECT_LE(mean, 0.1) << key;
  }
}

// Against PIL itself: for boxes the sampler draws (wide scale range, so both
// up- and downscaling), Image.crop(box).resize((S, S), BICUBIC).convert("RGB")
// run by Python gives the same 8-bit pixels.
TEST(TrainTransformTest, MatchesPilCropAndResize) {
  if (RunCommand({kPython, "-c", "import PIL"}).exit_code != 0) {
    GTEST_SKIP() << kPython << " cannot import PIL (Debian: python3-pil)";
  }
  RandomResizedCropOptions crop;
  crop.scale_min = 0.08;  // torchvision's default range: boxes from tiny to whole.
  const int size = 48;
  struct Case {
    std::string image;
    uint64_t seed;
    CropBox box;
    std::string out;
  };
  std::vector<Case> cases;
  nlohmann::json jobs = nlohmann::json::array();
  for (const char* image : kImages) {
    for (uint64_t seed : {1, 2, 3}) {
      Case c{image, seed, {}, ScratchPath(std::string("pil_") + image + std::to_string(seed))};
      // The box the transform will draw: its first use of the generator.
      std::mt19937_64 rng(seed);
      DecodedImage decoded = *DecodeImageBytes(ImageBytes(image), PreprocessOptions());
      c.box = SampleRandomResizedCrop(decoded.pixels.width, decoded.pixels.height, crop, rng);
      jobs.push_back({{"image", ReferencePath(std::string("images/") + image)},
                      {"left", c.box.left},
                      {"top", c.box.top},
                      {"width", c.box.width},
                      {"height", c.box.height},
                      {"size", size},
                      {"out", c.out}});
      cases.push_back(c);
    }
  }
  const std::string jobs_path = ScratchPath("pil_jobs.json");
  std::ofstream(jobs_path) << jobs.dump();
  const auto run = RunCommand(
      {kPython, std::string(OCLIP_SOURCE_DIR) + "/tests/model/pil_resized_crop.py", jobs_path});
  ASSERT_EQ(run.exit_code, 0) << run.command << "\n" << run.err;
  const PreprocessOptions options;
  for (const Case& c : cases) {
    const std::string rgb = ReadBytes(c.out);
    ASSERT_EQ(rgb.size(), 3u * size * size) << c.image;
    const std::vector<float> out = Transform(c.image, c.seed, crop, size);
    int max_diff = 0;
    double total_diff = 0;
    for (int c_index = 0; c_index < 3; ++c_index) {
      for (int i = 0; i < size * size; ++i) {
        const float v =
            out[c_index * size * size + i] * options.std[c_index] + options.mean[c_index];
        const int ours = static_cast<int>(std::lround(v * 255.0f));
        const int pil = static_cast<uint8_t>(rgb[i * 3 + c_index]);
        max_diff = std::max(max_diff, std::abs(ours - pil));
        total_diff += std::abs(ours - pil);
      }
    }
    std::printf("[ pixels   ] %s seed %d box %d,%d %dx%d: max %d/255, mean %.4f/255\n",
                c.image.c_str(), static_cast<int>(c.seed), c.box.left, c.box.top, c.box.width,
                c.box.height, max_diff, total_diff / (3.0 * size * size));
    EXPECT_LE(max_diff, 0) << c.image << " seed " << c.seed;
  }
}

TEST(TrainTransformTest, RejectsBadInput) {
  PreprocessOptions options;
  options.image_size = 32;
  std::vector<float> out(3 * 32 * 32);
  std::mt19937_64 rng(0);
  const std::string bytes = ImageBytes("tiny.png");
  EXPECT_EQ(PreprocessTrainImageBytes("not an image", options, {}, rng, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PreprocessTrainImageBytes("", options, {}, rng, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  for (auto [smin, smax, rmin, rmax] :
       {std::make_tuple(0.0, 1.0, 0.75, 1.33), std::make_tuple(1.0, 0.9, 0.75, 1.33),
        std::make_tuple(0.9, 1.0, 1.5, 1.0), std::make_tuple(0.9, 1.0, -1.0, 1.0)}) {
    RandomResizedCropOptions crop;
    crop.scale_min = smin;
    crop.scale_max = smax;
    crop.ratio_min = rmin;
    crop.ratio_max = rmax;
    EXPECT_EQ(PreprocessTrainImageBytes(bytes, options, crop, rng, out.data()).code(),
              absl::StatusCode::kInvalidArgument)
        << smin << " " << smax << " " << rmin << " " << rmax;
  }
  options.max_pixels = 100;  // tiny.png has 240 pixels.
  EXPECT_EQ(PreprocessTrainImageBytes(bytes, options, {}, rng, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip::testing
