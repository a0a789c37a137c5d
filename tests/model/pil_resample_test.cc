// model/image/pil_resample.h's CropResampler against Pillow's algorithm as
// Pillow's libImaging/Resample.c writes it (transcribed below: the whole
// image resized, horizontal pass then vertical, then cropped), on random
// images of every band count, down- and upscaled, with the AVX-512 kernels
// and with the portable ones. Every output byte must be Pillow's.

#include "model/image/pil_resample.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace oclip::testing {
namespace {

// Pillow 9.4, Resample.c: precompute_coeffs + normalize_coeffs_8bpc for the
// whole axis, then ImagingResampleHorizontal_8bpc/Vertical_8bpc.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct PillowCoeffs {
  int ksize = 0;
  std::vector<int> bounds;  // xmin, count per output
  std::vector<int> kk;      // ksize fixed-point weights per output
};

double BicubicFilter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double BilinearFilter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

PillowCoeffs PrecomputeCoeffs(int in_size, int out_size, bool bicubic) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = (bicubic ? 2.0 : 1.0) * filterscale;
  PillowCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(out_size * 2);
  c.kk.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> prekk(static_cast<size_t>(out_size) * c.ksize, 0.0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &prekk[static_cast<size_t>(xx) * c.ksize];
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double arg = (x + xmin - center + 0.5) * ss;
      const double w = bicubic ? BicubicFilter(arg) : BilinearFilter(arg);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  for (size_t i = 0; i < prekk.size(); ++i) {
    c.kk[i] = prekk[i] < 0 ? static_cast<int>(-0.5 + prekk[i] * (1 << kPrecisionBits))
                           : static_cast<int>(0.5 + prekk[i] * (1 << kPrecisionBits));
  }
  return c;
}

uint8_t Clip8(int in) {  // clip8_lookups[in >> PRECISION_BITS]
  const int v = in >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

Image8 PillowResize(const Image8& in, int out_width, int out_height, bool bicubic) {
  const int bands = in.bands;
  Image8 temp = in;
  if (out_width != in.width) {
    const PillowCoeffs c = PrecomputeCoeffs(in.width, out_width, bicubic);
    temp.width = out_width;
    temp.pixels.assign(static_cast<size_t>(out_width) * in.height * bands, 0);
    for (int yy = 0; yy < in.height; ++yy) {
      for (int xx = 0; xx < out_width; ++xx) {
        for (int b = 0; b < bands; ++b) {
          int ss = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < c.bounds[xx * 2 + 1]; ++x) {
            ss += in.row(yy)[(x + c.bounds[xx * 2]) * bands + b] * c.kk[xx * c.ksize + x];
          }
          temp.pixels[(static_cast<size_t>(yy) * out_width + xx) * bands + b] = Clip8(ss);
        }
      }
    }
  }
  Image8 out = temp;
  if (out_height != in.height) {
    const PillowCoeffs c = PrecomputeCoeffs(in.height, out_height, bicubic);
    out.height = out_height;
    out.pixels.assign(static_cast<size_t>(temp.width) * out_height * bands, 0);
    for (int yy = 0; yy < out_height; ++yy) {
      for (int xx = 0; xx < temp.width * bands; ++xx) {
        int ss = 1 << (kPrecisionBits - 1);
        for (int y = 0; y < c.bounds[yy * 2 + 1]; ++y) {
          ss += temp.row(y + c.bounds[yy * 2])[xx] * c.kk[yy * c.ksize + y];
        }
        out.pixels[static_cast<size_t>(yy) * temp.width * bands + xx] = Clip8(ss);
      }
    }
  }
  return out;
}

// Smooth gradients plus noise, so that the kernels' negative lobes and the
// clipping at 0 and 255 both occur.
Image8 RandomImage(int width, int height, int bands, std::mt19937& rng) {
  Image8 image;
  image.width = width;
  image.height = height;
  image.bands = bands;
  image.pixels.resize(static_cast<size_t>(width) * height * bands);
  std::uniform_int_distribution<int> noise(-60, 60), pick(0, 9);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int b = 0; b < bands; ++b) {
        int v = (x * (37 + 11 * b) + y * 23) % 256 + noise(rng);
        if (pick(rng) == 0) v = pick(rng) < 5 ? 0 : 255;  // hard edges
        image.pixels[(static_cast<size_t>(y) * width + x) * bands + b] =
            static_cast<uint8_t>(std::clamp(v, 0, 255));
      }
    }
  }
  return image;
}

struct Case {
  int width, height, bands, resized_width, resized_height;
};

void ExpectPillowPixels(const Case& c, ResampleFilter filter, int rows_per_call, std::mt19937& rng) {
  const Image8 in = RandomImage(c.width, c.height, c.bands, rng);
  const Image8 full =
      PillowResize(in, c.resized_width, c.resized_height, filter == ResampleFilter::kBicubic);
  // A centre crop and a corner crop of random size.
  std::uniform_int_distribution<int> crop_width(1, c.resized_width), crop_height(1, c.resized_height);
  CropRect crops[2];
  crops[0].width = crop_width(rng);
  crops[0].height = crop_height(rng);
  crops[0].left = (c.resized_width - crops[0].width) / 2;
  crops[0].top = (c.resized_height - crops[0].height) / 2;
  crops[1].width = crop_width(rng);
  crops[1].height = crop_height(rng);
  crops[1].left = c.resized_width - crops[1].width;
  crops[1].top = 0;
  const std::string what = std::to_string(c.width) + "x" + std::to_string(c.height) + "x" +
                           std::to_string(c.bands) + " -> " + std::to_string(c.resized_width) +
                           "x" + std::to_string(c.resized_height) +
                           (filter == ResampleFilter::kBicubic ? " bicubic" : " bilinear");
  CropResampler resampler;
  for (const CropRect& crop : crops) {
    resampler.Start(in.width, in.height, in.bands, c.resized_width, c.resized_height, crop,
                    filter);
    ASSERT_LE(0, resampler.first_row());
    ASSERT_LE(resampler.end_row(), in.height);
    const size_t stride = static_cast<size_t>(in.width) * in.bands;
    for (int y = 0; y < in.height; y += rows_per_call) {
      resampler.AddRows(y, std::min(rows_per_call, in.height - y), in.row(y), stride);
    }
    int rows = 0, wrong = 0;
    resampler.Finish([&](int y, const uint8_t* row) {
      EXPECT_EQ(y, rows++);
      const uint8_t* expected = full.row(crop.top + y) + static_cast<size_t>(crop.left) * in.bands;
      for (int i = 0; i < crop.width * in.bands; ++i) wrong += row[i] != expected[i];
    });
    EXPECT_EQ(rows, crop.height) << what;
    EXPECT_EQ(wrong, 0) << what << ", crop " << crop.left << "," << crop.top << " "
                        << crop.width << "x" << crop.height;
  }
}

class CropResamplerTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { CropResampler::AllowSimdForTesting(GetParam()); }
  void TearDown() override { CropResampler::AllowSimdForTesting(true); }
};

TEST_P(CropResamplerTest, MatchesPillowBitForBit) {
  std::mt19937 rng(1234);
  const Case cases[] = {
      {640, 480, 3, 298, 224},  // OpenCLIP's 224 from a VGA photo
      {97, 61, 3, 35, 22},      {61, 97, 1, 22, 35},   {45, 33, 4, 87, 64},   // upscale
      {20, 12, 2, 106, 64},     {300, 7, 3, 50, 7},    {7, 300, 3, 7, 50},    // one axis kept
      {33, 45, 1, 33, 45},      {513, 250, 4, 40, 19}, {1000, 17, 2, 224, 3}, // big shrink
      {224, 224, 3, 224, 224},  {5, 5, 3, 64, 64},
  };
  for (const Case& c : cases) {
    for (ResampleFilter filter : {ResampleFilter::kBicubic, ResampleFilter::kBilinear}) {
      for (int rows_per_call : {1, 16, 1000}) ExpectPillowPixels(c, filter, rows_per_call, rng);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, CropResamplerTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Simd" : "Portable";
                         });

// ResizeBicubicAndCrop is the same resampler over a whole image.
TEST(PilResampleTest, ResizeBicubicAndCropMatchesPillow) {
  std::mt19937 rng(99);
  const Image8 in = RandomImage(150, 100, 3, rng);
  const Image8 full = PillowResize(in, 96, 64, true);
  CropRect crop;
  crop.left = 16;
  crop.top = 0;
  crop.width = crop.height = 64;
  const Image8 out = ResizeBicubicAndCrop(in, 96, 64, crop);
  ASSERT_EQ(out.width, 64);
  ASSERT_EQ(out.height, 64);
  for (int y = 0; y < 64; ++y) {
    ASSERT_EQ(std::memcmp(out.row(y), full.row(y) + 16 * 3, 64 * 3), 0) << "row " << y;
  }
}

}  // namespace
}  // namespace oclip::testing
