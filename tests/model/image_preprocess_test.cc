// OpenCLIP's eval transform (model/image/preprocess.h) against the tensors
// Python OpenCLIP produced for the reference images.

#include "model/image/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

// jpeglib.h needs FILE and size_t first.
#include <cstddef>
#include <cstdlib>
#include <jpeglib.h>

#include "core/safetensors.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"
#include "tests/model/parity.h"
#include "tests/model/reference.h"

namespace oclip::testing {
namespace {

TEST(ImagePreprocessTest, ResizeFollowsTorchvision) {
  // Shorter side to the target, longer side truncated (torchvision's int()).
  EXPECT_EQ(ShortSideResize(640, 480, 224), std::make_pair(298, 224));
  EXPECT_EQ(ShortSideResize(333, 500, 224), std::make_pair(224, 336));
  EXPECT_EQ(ShortSideResize(225, 1000, 224), std::make_pair(224, 995));
  EXPECT_EQ(ShortSideResize(20, 12, 64), std::make_pair(106, 64));
}

TEST(ImagePreprocessTest, CropOffsetsRoundHalfToEven) {
  EXPECT_EQ(RoundHalfToEven(0.5), 0);
  EXPECT_EQ(RoundHalfToEven(1.5), 2);
  EXPECT_EQ(RoundHalfToEven(74.5), 74);
  EXPECT_EQ(RoundHalfToEven(37.0), 37);
}

TEST(ImagePreprocessTest, RejectsBadInput) {
  PreprocessOptions options;
  std::vector<float> out(3 * 224 * 224);
  EXPECT_EQ(PreprocessImageBytes("", options, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PreprocessImageBytes("definitely not an image", options, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PreprocessImageFile("/nonexistent.jpg", options, out.data()).code(),
            absl::StatusCode::kNotFound);
  // Truncated and corrupted files of each decoder path (libjpeg, libvips).
  for (const char* image : {"images/landscape.jpg", "images/portrait.png", "images/wide.webp"}) {
    std::ifstream in(ReferencePath(image), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    for (size_t keep : {size_t{3}, size_t{100}, bytes.size() / 2}) {
      absl::Status truncated = PreprocessImageBytes(bytes.substr(0, keep), options, out.data());
      EXPECT_EQ(truncated.code(), absl::StatusCode::kInvalidArgument) << image << " " << keep;
    }
    std::string corrupt = bytes;
    for (size_t i = corrupt.size() / 4; i < corrupt.size() / 2; i += 7) corrupt[i] = '\x5a';
    absl::Status status = PreprocessImageBytes(corrupt, options, out.data());
    EXPECT_TRUE(status.ok() || status.code() == absl::StatusCode::kInvalidArgument) << status;
  }
  // A PNG whose header claims 100000 x 100000 pixels is refused from the
  // header, before anything is allocated for it.
  std::ifstream png_in(ReferencePath("images/tiny.png"), std::ios::binary);
  std::string png((std::istreambuf_iterator<char>(png_in)), {});
  ASSERT_GT(png.size(), 24u);
  for (int i : {16, 20}) {  // IHDR width and height, big-endian.
    png[i] = 0;
    png[i + 1] = 1;
    png[i + 2] = static_cast<char>(0x86);
    png[i + 3] = static_cast<char>(0xa0);
  }
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17));  // "IHDR" + fields
  for (int i = 0; i < 4; ++i) png[29 + i] = static_cast<char>(crc >> (24 - 8 * i));
  absl::Status absurd = PreprocessImageBytes(png, PreprocessOptions(), out.data());
  EXPECT_EQ(absurd.code(), absl::StatusCode::kInvalidArgument) << absurd;
  EXPECT_NE(absurd.message().find("100000x100000 pixels exceeds"), std::string::npos) << absurd;
  options.max_pixels = 100;  // landscape.jpg has 640x480.
  absl::Status bomb =
      PreprocessImageFile(ReferencePath("images/landscape.jpg"), options, out.data());
  EXPECT_EQ(bomb.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bomb.message().find("exceeds"), std::string::npos) << bomb;
}

// Pixel differences, in units of 1/255, of oclip's preprocessing against
// OpenCLIP's (PIL's) for every reference image, at every size and with both
// normalizations. The gate: max <= 2/255, mean <= 0.1/255.
class ImagePreprocessParityTest
    : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};

TEST_P(ImagePreprocessParityTest, IsCloseToOpenClip) {
  const auto [variant, image] = GetParam();
  const std::string key = std::string(variant) + image;
  torch::Tensor expected = LoadReferenceTensor("preprocessed.safetensors", key);
  PreprocessOptions options;
  options.image_size = std::stoi(variant);
  if (std::string(variant).find("inception") != std::string::npos) {
    options.mean = {0.5f, 0.5f, 0.5f};
    options.std = {0.5f, 0.5f, 0.5f};
  }
  const int size = options.image_size;
  torch::Tensor actual = torch::empty({3, size, size});
  ASSERT_TRUE(PreprocessImageFile(ReferencePath(std::string("images/") + image), options,
                                  actual.data_ptr<float>())
                  .ok());
  // Back to pixel units: x * std * 255.
  torch::Tensor std = torch::tensor({options.std[0], options.std[1], options.std[2]}).view({3, 1, 1});
  torch::Tensor diff = ((actual - expected) * std * 255).abs();
  const double max = diff.max().item<double>(), mean = diff.mean().item<double>();
  std::printf("[ pixels   ] %s: max %.2f/255, mean %.3f/255\n", key.c_str(), max, mean);
  EXPECT_LE(max, 2.0) << key;
  EXPECT_LE(mean, 0.1) << key;
}

INSTANTIATE_TEST_SUITE_P(
    ReferenceImages, ImagePreprocessParityTest,
    ::testing::Combine(::testing::Values("56/openai/", "64/openai/", "224/openai/",
                                         "224/inception/"),
                       ::testing::Values("landscape.jpg", "portrait.png", "alpha.png", "gray.jpg",
                                         "tiny.png", "wide.webp", "CLIP.png")),
    [](const ::testing::TestParamInfo<std::tuple<const char*, const char*>>& info) {
      return TestNameFrom(std::string(std::get<0>(info.param)) + std::get<1>(info.param));
    });

}  // namespace
}  // namespace oclip::testing

namespace oclip::testing {
namespace {

// A palette PNG of width x height whose pixel (x, y) has palette index
// (x / 3 + y / 5) % 4, written by hand (signature, IHDR, PLTE, IDAT, IEND).
std::string PalettePng(int width, int height, const uint8_t palette[4][3]) {
  auto chunk = [](const std::string& type, const std::string& data) {
    std::string out;
    for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>(data.size() >> (8 * i)));
    const std::string body = type + data;
    out += body;
    const uint32_t crc = static_cast<uint32_t>(
        crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
    for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>(crc >> (8 * i)));
    return out;
  };
  std::string ihdr;
  for (int v : {width, height}) {
    for (int i = 3; i >= 0; --i) ihdr.push_back(static_cast<char>(v >> (8 * i)));
  }
  ihdr += std::string("\x08\x03\x00\x00\x00", 5);  // 8-bit, palette
  std::string plte(reinterpret_cast<const char*>(palette), 12);
  std::string raw;
  for (int y = 0; y < height; ++y) {
    raw.push_back('\0');  // filter: none
    for (int x = 0; x < width; ++x) raw.push_back(static_cast<char>((x / 3 + y / 5) % 4));
  }
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string idat(size, '\0');
  compress(reinterpret_cast<Bytef*>(idat.data()), &size,
           reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()));
  idat.resize(size);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("PLTE", plte) +
         chunk("IDAT", idat) + chunk("IEND", "");
}

// PIL resizes palette ("P") images with nearest neighbour whatever filter is
// asked for, so every output pixel is a palette colour; a bicubic resize
// would blend neighbours into colours that are not in the palette.
TEST(ImagePreprocessTest, PaletteImagesResizeWithNearestNeighbour) {
  const uint8_t palette[4][3] = {{255, 0, 0}, {0, 0, 255}, {20, 200, 20}, {250, 250, 250}};
  PreprocessOptions options;
  options.image_size = 64;
  options.mean = {0, 0, 0};
  options.std = {1, 1, 1};
  for (auto [width, height] : {std::pair<int, int>{150, 100}, std::pair<int, int>{40, 50}}) {
    std::vector<float> out(3 * 64 * 64);
    ASSERT_TRUE(PreprocessImageBytes(PalettePng(width, height, palette), options, out.data()).ok());
    for (int i = 0; i < 64 * 64; ++i) {
      bool in_palette = false;
      for (const auto& colour : palette) {
        bool same = true;
        for (int c = 0; c < 3; ++c) same &= std::lround(out[c * 64 * 64 + i] * 255) == colour[c];
        in_palette |= same;
      }
      ASSERT_TRUE(in_palette) << width << "x" << height << " pixel " << i;
    }
  }
}

// A 32x32 JPEG of one CMYK ink colour, with the Adobe marker (inks stored
// inverted, as Adobe applications and PIL write them), encoded with libjpeg.
std::string UniformCmykJpeg(const uint8_t ink[4]) {
  jpeg_compress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = 32;
  info.image_height = 32;
  info.input_components = 4;
  info.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, 100, TRUE);
  info.write_Adobe_marker = TRUE;
  jpeg_start_compress(&info, TRUE);
  std::vector<uint8_t> row(32 * 4);
  for (int x = 0; x < 32; ++x) {
    for (int c = 0; c < 4; ++c) row[x * 4 + c] = static_cast<uint8_t>(255 - ink[c]);
  }
  while (info.next_scanline < 32) {
    JSAMPROW rows[1] = {row.data()};
    jpeg_write_scanlines(&info, rows, 1);
  }
  jpeg_finish_compress(&info);
  std::string bytes(reinterpret_cast<char*>(buffer), size);
  jpeg_destroy_compress(&info);
  std::free(buffer);
  return bytes;
}

// PIL converts CMYK to RGB with its plain formula (no ICC profile):
// R = (255 - K) - C * (255 - K) / 255, and likewise G from M, B from Y.
TEST(ImagePreprocessTest, CmykJpegsConvertWithPilsFormula) {
  const uint8_t ink[4] = {30, 200, 120, 60};
  PreprocessOptions options;
  options.image_size = 16;
  options.mean = {0, 0, 0};
  options.std = {1, 1, 1};
  std::vector<float> out(3 * 16 * 16);
  absl::Status status = PreprocessImageBytes(UniformCmykJpeg(ink), options, out.data());
  ASSERT_TRUE(status.ok()) << status;
  const double nk = 255 - ink[3];
  for (int c = 0; c < 3; ++c) {
    const double expected = nk - ink[c] * nk / 255;
    // JPEG quantization moves a uniform colour by a level or two at most.
    EXPECT_NEAR(out[c * 16 * 16 + 100] * 255, expected, 2.5) << "channel " << c;
  }
}

// Fast mode trades PIL-exact pixels for speed (JPEGs: DCT shrink-on-load,
// fast IDCT, plain chroma upsampling, bilinear resampling); the features it
// gives must stay within cosine 0.999 of OpenCLIP's, for every reference
// image (those that are not JPEGs take the parity path).
TEST(ImagePreprocessFastModeTest, KeepsFeaturesWithinCosine999) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  torch::Tensor expected = LoadReferenceTensor("tiny-vit.expected.safetensors", "image_features");
  auto reader = SafetensorsReader::Open(ReferencePath("tiny-vit.expected.safetensors"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  const std::vector<std::string> images =
      nlohmann::json::parse((*reader)->metadata().at("image_order"));  // The rows of `expected`.
  ASSERT_EQ(static_cast<int64_t>(images.size()), expected.size(0));
  PreprocessOptions options;
  options.image_size = 64;
  options.fast_jpeg_shrink = true;
  torch::InferenceMode inference;
  for (size_t row = 0; row < images.size(); ++row) {
    const std::string& image = images[row];
    torch::Tensor pixels = torch::empty({1, 3, 64, 64});
    ASSERT_TRUE(PreprocessImageFile(ReferencePath("images/" + image), options,
                                    pixels.data_ptr<float>())
                    .ok());
    auto features = model->EncodeImage(pixels);
    ASSERT_TRUE(features.ok());
    const double cosine = torch::cosine_similarity(features->view({-1}),
                                                   expected[static_cast<int64_t>(row)], 0)
                              .item<double>();
    std::printf("[ fast     ] %s: feature cosine %.6f\n", image.c_str(), cosine);
    EXPECT_GE(cosine, 0.999) << image;
  }
}

// The largest difference, in 1/255 units, between oclip's eval transform and
// PIL's (tests/model/pil_eval_transform.py, which also makes the images in
// `folder`) for each image at each size, printed as it goes.
void ExpectSameAsPil(const std::string& folder, const std::vector<std::string>& images,
                     const std::vector<int>& sizes) {
  const std::string python = "/usr/bin/python3";  // Debian's, with python3-pil.
  const std::string script = std::string(OCLIP_SOURCE_DIR) + "/tests/model/pil_eval_transform.py";
  nlohmann::json jobs = nlohmann::json::array();
  for (const std::string& image : images) {
    for (int size : sizes) {
      jobs.push_back({{"image", folder + "/" + image},
                      {"size", size},
                      {"out", folder + "/" + image + "." + std::to_string(size) + ".rgb"}});
    }
  }
  const std::string jobs_path = folder + "/jobs.json";
  std::ofstream(jobs_path) << jobs.dump();
  const auto run = RunCommand({python, script, "transform", jobs_path});
  ASSERT_EQ(run.exit_code, 0) << run.command << "\n" << run.err;

  for (const nlohmann::json& job : jobs) {
    const std::string name = job["image"].get<std::string>();
    const int size = job["size"].get<int>();
    PreprocessOptions options;
    options.image_size = size;
    options.mean = {0, 0, 0};  // So that out = value / 255.
    options.std = {1, 1, 1};
    std::vector<float> out(3 * size * size);
    const absl::Status status = PreprocessImageFile(name, options, out.data());
    ASSERT_TRUE(status.ok()) << status;
    const std::string pil = ReadFileOrEmpty(job["out"].get<std::string>());
    ASSERT_EQ(pil.size(), 3u * size * size) << name;
    int max_diff = 0;
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < size * size; ++i) {
        const int ours = static_cast<int>(std::lround(out[c * size * size + i] * 255.0f));
        max_diff = std::max(max_diff, std::abs(ours - static_cast<uint8_t>(pil[i * 3 + c])));
      }
    }
    std::printf("[ pixels   ] %s at %d: max %d/255\n", name.c_str(), size, max_diff);
    EXPECT_EQ(max_diff, 0) << name << " at " << size;
  }
}

// Makes the images of tests/model/pil_eval_transform.py in a scratch folder.
std::string MakePilImages(const std::string& name) {
  const std::string python = "/usr/bin/python3";
  const std::string script = std::string(OCLIP_SOURCE_DIR) + "/tests/model/pil_eval_transform.py";
  EXPECT_EQ(RunCommand({python, "-c", "import PIL"}).exit_code, 0)
      << python << " cannot import PIL (Debian: python3-pil, installed by scripts/install-deps.sh)";
  const std::string folder = ScratchPath(name);
  EXPECT_EQ(RunCommand({"mkdir", "-p", folder}).exit_code, 0);
  const auto made = RunCommand({python, script, "make", folder});
  EXPECT_EQ(made.exit_code, 0) << made.command << "\n" << made.err;
  return folder;
}

// Against PIL itself, for the image modes PIL sends down their own paths
// (tests/model/pil_eval_transform.py makes the images and runs OpenCLIP's eval
// transform on them): a GIF's transparent palette index keeps its colour, a
// grey-palette GIF is "L" (bicubic, not nearest), 16-bit grey is "I" (resized
// in 32 bits, then clipped to 0..255 by convert("RGB")), 16-bit RGB keeps the
// high byte, bilevel "1" resizes with nearest neighbour. Every pixel must be
// PIL's, downscaled and upscaled.
TEST(ImagePreprocessTest, MatchesPilOnItsSpecialModes) {
  const std::string folder = MakePilImages("pil_modes");
  ASSERT_FALSE(::testing::Test::HasFailure());
  ExpectSameAsPil(folder,
                  {"transparent.gif", "grey.gif", "grey16.png", "rgb16.png", "bilevel.png",
                   "grey_alpha.png", "transparent_palette.png"},
                  {16, 64});  // 45x33 images: down- and upscaling.
}

// JPEGs take oclip's streaming path (libjpeg-turbo rows resampled block by
// block as they are decoded); every pixel must still be PIL's, for each
// chroma subsampling, grey, progressive, odd sizes and portrait, down- and
// upscaled.
TEST(ImagePreprocessTest, JpegsMatchPilExactly) {
  const std::string folder = MakePilImages("pil_jpegs");
  ASSERT_FALSE(::testing::Test::HasFailure());
  ExpectSameAsPil(folder,
                  {"photo444.jpg", "photo422.jpg", "photo420.jpg", "portrait420.jpg", "odd420.jpg",
                   "grey.jpg", "progressive.jpg"},
                  {16, 64, 224});
}

}  // namespace
}  // namespace oclip::testing
