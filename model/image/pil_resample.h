// Pillow's bicubic resampling of 8-bit images, reproduced exactly: OpenCLIP's
// preprocessing resizes with PIL, and matching its pixels (not approximately,
// as libvips's own resize does) is what keeps image features at parity.
//
// Pillow's algorithm (libImaging/Resample.c): a separable convolution with the
// cubic kernel a = -0.5 whose support is widened by the downscale factor,
// coefficients normalized per output pixel and rounded to 22-bit fixed point,
// a horizontal pass into an 8-bit intermediate, then a vertical pass, each
// rounded and clamped to 0..255.
//
// Only the pixels inside `crop` are computed (the rest of the resized image
// would be cropped away); each computed pixel equals Pillow's bit for bit.

#ifndef OCLIP_MODEL_IMAGE_PIL_RESAMPLE_H_
#define OCLIP_MODEL_IMAGE_PIL_RESAMPLE_H_

#include <cstdint>
#include <vector>

namespace oclip {

// Interleaved 8-bit pixels, row-major, `bands` values per pixel.
struct Image8 {
  int width = 0;
  int height = 0;
  int bands = 0;
  std::vector<uint8_t> pixels;

  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * bands; }
};

struct CropRect {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

// Image.resize((resized_width, resized_height), BICUBIC).crop(crop), with
// `crop` inside the resized image. A same-size resize is a copy, as in PIL.
Image8 ResizeBicubicAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop);

// For PIL's "I" images (16-bit grey PNGs): `in` holds one uint16 per pixel
// (native byte order, 2 bytes per pixel). Image.resize(..., BICUBIC) as
// Pillow's 32-bit path computes it (double coefficients, each pass rounded to
// an int32), .crop(crop), then convert("L")'s clip to 0..255: one band.
Image8 ResizeInt32BicubicCropAndClip(const Image8& in, int resized_width, int resized_height,
                                     const CropRect& crop);

// Image.resize((resized_width, resized_height), NEAREST).crop(crop), as PIL
// does it for palette ("P") images whatever filter is asked for: each output
// pixel copies the input pixel under its centre, positions accumulated in
// double precision exactly as Pillow's ImagingScaleAffine steps them.
Image8 ResizeNearestAndCrop(const Image8& in, int resized_width, int resized_height,
                            const CropRect& crop);

// PIL's RGBA -> RGBa and back (and LA <-> La): Image.resize works on
// premultiplied pixels for images with alpha. The last band is alpha.
void PremultiplyAlpha(Image8& image);
void UnpremultiplyAlpha(Image8& image);

}  // namespace oclip

#endif  // OCLIP_MODEL_IMAGE_PIL_RESAMPLE_H_
