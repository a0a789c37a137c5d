#include "model/image/preprocess.h"

#include <immintrin.h>
#include <vips/vips.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "model/image/jpeg_decoder.h"
#include "model/image/pil_resample.h"

namespace oclip {
namespace {

absl::Status EnsureVips() {
  static const bool ok = VIPS_INIT("oclip") == 0;
  if (!ok) return absl::InternalError("libvips failed to initialise");
  return absl::OkStatus();
}

// Owns one VipsImage reference.
class ImageRef {
 public:
  ImageRef() = default;
  explicit ImageRef(VipsImage* image) : image_(image) {}
  ImageRef(const ImageRef&) = delete;
  ImageRef& operator=(const ImageRef&) = delete;
  ~ImageRef() {
    if (image_ != nullptr) g_object_unref(image_);
  }
  VipsImage* get() const { return image_; }
  void Reset(VipsImage* image) {
    if (image_ != nullptr) g_object_unref(image_);
    image_ = image;
  }

 private:
  VipsImage* image_ = nullptr;
};

absl::Status VipsError(const std::string& what) {
  std::string message = absl::StrCat(what, ": ", vips_error_buffer());
  vips_error_clear();
  while (!message.empty() && message.back() == '\n') message.pop_back();
  return absl::InvalidArgumentError(message);
}

// Replaces `image` by the result of a libvips operation on it.
template <typename Op>
absl::Status Apply(ImageRef& image, const std::string& what, Op op) {
  VipsImage* out = nullptr;
  if (op(image.get(), &out) != 0) return VipsError(what);
  image.Reset(out);
  return absl::OkStatus();
}

// Runs the decode and copies the pixels out, `bytes_per_pixel` bytes each
// (held as that many 8-bit "bands").
absl::StatusOr<Image8> ReadPixels(ImageRef& image, int bytes_per_pixel) {
  Image8 out;
  out.width = vips_image_get_width(image.get());
  out.height = vips_image_get_height(image.get());
  out.bands = bytes_per_pixel;
  size_t bytes = 0;
  void* pixels = vips_image_write_to_memory(image.get(), &bytes);
  if (pixels == nullptr) return VipsError("decode");
  const uint8_t* begin = static_cast<const uint8_t*>(pixels);
  out.pixels.assign(begin, begin + bytes);
  g_free(pixels);
  if (bytes != static_cast<size_t>(out.width) * out.height * out.bands) {
    return absl::InternalError("decoded image has an unexpected size");
  }
  return out;
}

// Decoded pixels as PIL holds them: 8-bit L, LA, RGB or RGBA.
absl::StatusOr<Image8> ToImage8(ImageRef& image) {
  const VipsInterpretation interpretation = vips_image_get_interpretation(image.get());
  if (interpretation != VIPS_INTERPRETATION_sRGB && interpretation != VIPS_INTERPRETATION_B_W) {
    // CMYK, 16-bit RGB/grey, Lab, ...: to 8-bit sRGB.
    OCLIP_RETURN_IF_ERROR(Apply(image, "colour conversion", [](VipsImage* in, VipsImage** o) {
      return vips_colourspace(in, o, VIPS_INTERPRETATION_sRGB, nullptr);
    }));
  }
  if (vips_image_get_format(image.get()) != VIPS_FORMAT_UCHAR) {
    OCLIP_RETURN_IF_ERROR(Apply(image, "cast to 8 bits", [](VipsImage* in, VipsImage** o) {
      return vips_cast_uchar(in, o, nullptr);
    }));
  }
  if (vips_image_get_bands(image.get()) > 4) {
    OCLIP_RETURN_IF_ERROR(Apply(image, "band extraction", [](VipsImage* in, VipsImage** o) {
      return vips_extract_band(in, o, 0, "n", 4, nullptr);
    }));
  }
  return ReadPixels(image, vips_image_get_bands(image.get()));
}

absl::Status CheckPixelLimit(ImageRef& image, const PreprocessOptions& options) {
  const int width = vips_image_get_width(image.get());
  const int height = vips_image_get_height(image.get());
  if (width <= 0 || height <= 0) return absl::InvalidArgumentError("image has no pixels");
  if (static_cast<int64_t>(width) * height > options.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image of ", width, "x", height, " pixels exceeds the limit of ", options.max_pixels));
  }
  return absl::OkStatus();
}

// PIL's convert("RGB") of `n` CMYK pixels (Convert.c cmyk2rgb) into `rgb`.
void ConvertCmykToRgb(const uint8_t* cmyk, size_t n, uint8_t* rgb) {
  for (size_t i = 0; i < n; ++i, cmyk += 4, rgb += 3) {
    const int nk = 255 - cmyk[3];
    for (int c = 0; c < 3; ++c) {
      const int tmp = cmyk[c] * nk + 128;  // MULDIV255
      rgb[c] = static_cast<uint8_t>(std::clamp(nk - (((tmp >> 8) + tmp) >> 8), 0, 255));
    }
  }
}

// ToTensor then Normalize of each 8-bit value: (v / 255 - mean) / std in
// float, as torchvision computes it, for the 256 values of each channel.
struct NormalizeTable {
  float values[3][256];
  explicit NormalizeTable(const PreprocessOptions& options) {
    for (int c = 0; c < 3; ++c) {
      for (int v = 0; v < 256; ++v) {
        values[c][v] = (v / 255.0f - options.mean[c]) / options.std[c];
      }
    }
  }
};

// convert("RGB") (grey replicated, alpha dropped without compositing), then
// ToTensor and Normalize, of one output row of `bands`-byte pixels into row
// `y` of the three CHW planes of `out`.
template <int kBands>
void NormalizeRowOf(const uint8_t* row, int width, const NormalizeTable& table, float* out,
                    size_t plane) {
  for (int c = 0; c < 3; ++c) {
    const float* values = table.values[c];
    const int band = kBands >= 3 ? c : 0;
    float* dst = out + c * plane;
    for (int x = 0; x < width; ++x) dst[x] = values[row[x * kBands + band]];
  }
}

// The same for grey and RGB rows with AVX-512: 16 pixels at a time, a byte
// permute to pick each channel, a gather from its table.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12, inside its AVX-512 headers
template <int kBands>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi"))) void NormalizeRowAvx512(
    const uint8_t* row, int width, const NormalizeTable& table, float* out, size_t plane) {
  __m512i channels[3];
  for (int c = 0; c < 3; ++c) {
    alignas(64) uint8_t pick[64] = {};
    for (int i = 0; i < 16; ++i) pick[i] = static_cast<uint8_t>(i * kBands + (kBands == 3 ? c : 0));
    channels[c] = _mm512_load_si512(pick);
  }
  for (int x = 0; x < width; x += 16) {
    const int count = std::min(16, width - x);
    const int bytes = count * kBands;
    const __mmask64 load = bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
    const __mmask16 store = static_cast<__mmask16>((1u << count) - 1);
    const __m512i pixels = _mm512_maskz_loadu_epi8(load, row + x * kBands);
    for (int c = 0; c < 3; ++c) {
      const __m512i index = _mm512_cvtepu8_epi32(
          _mm512_castsi512_si128(_mm512_permutexvar_epi8(channels[c], pixels)));
      _mm512_mask_storeu_ps(out + c * plane + x, store,
                            _mm512_i32gather_ps(index, table.values[c], 4));
    }
  }
}
#pragma GCC diagnostic pop

bool UseAvx512Vbmi() {
  static const bool supported =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi");
  return supported;
}

void NormalizeRow(const uint8_t* row, int bands, int size, int y, const NormalizeTable& table,
                  float* out) {
  const size_t plane = static_cast<size_t>(size) * size;
  float* dst = out + static_cast<size_t>(y) * size;
  switch (bands) {
    case 1:
      if (UseAvx512Vbmi()) return NormalizeRowAvx512<1>(row, size, table, dst, plane);
      return NormalizeRowOf<1>(row, size, table, dst, plane);
    case 2: return NormalizeRowOf<2>(row, size, table, dst, plane);
    case 3:
      if (UseAvx512Vbmi()) return NormalizeRowAvx512<3>(row, size, table, dst, plane);
      return NormalizeRowOf<3>(row, size, table, dst, plane);
    default: return NormalizeRowOf<4>(row, size, table, dst, plane);
  }
}

// Buffers reused from one image to the next on each thread: fresh
// megabyte-sized buffers per image cost more in page faults than the
// resampling itself.
struct Workspace {
  CropResampler resampler;
  std::vector<uint8_t> rows;  // decoded rows waiting to be resampled
  std::vector<uint8_t> row;   // one converted output row
};

Workspace& ThreadWorkspace() {
  thread_local Workspace workspace;
  return workspace;
}

// Rows handed from the decoder to the resampler at a time.
constexpr int kDecodeRows = 16;

CropRect CenterCrop(int resized_width, int resized_height, int size) {
  CropRect crop;
  crop.left = static_cast<int>(RoundHalfToEven((resized_width - size) / 2.0));
  crop.top = static_cast<int>(RoundHalfToEven((resized_height - size) / 2.0));
  crop.width = crop.height = size;
  return crop;
}

// The IHDR facts libvips 8.14 does not report: bit depth and colour type.
struct PngHeader {
  int bit_depth = 0;
  int colour_type = 0;
};

std::optional<PngHeader> ReadPngHeader(absl::string_view bytes) {
  static constexpr char kSignature[] = "\x89PNG\r\n\x1a\n";
  if (bytes.size() < 26 || bytes.substr(0, 8) != absl::string_view(kSignature, 8) ||
      bytes.substr(12, 4) != "IHDR") {
    return std::nullopt;
  }
  return PngHeader{static_cast<uint8_t>(bytes[24]), static_cast<uint8_t>(bytes[25])};
}

// The transparent colour index of a GIF's first frame: the Graphic Control
// Extension's before the first image descriptor, as PIL reads
// info["transparency"]. nullopt when there is none (or the blocks are cut).
std::optional<int> GifTransparentIndex(absl::string_view gif) {
  const auto byte = [&gif](size_t i) { return static_cast<uint8_t>(gif[i]); };
  if (gif.size() < 13) return std::nullopt;
  size_t pos = 13;
  if (byte(10) & 0x80) pos += 3 * (size_t{1} << ((byte(10) & 7) + 1));  // Global colour table.
  std::optional<int> transparent;
  while (pos + 1 < gif.size() && byte(pos) == 0x21) {  // Extension blocks.
    const uint8_t label = byte(pos + 1);
    pos += 2;
    if (label == 0xF9 && pos + 5 <= gif.size() && byte(pos) == 4) {
      transparent = (byte(pos + 1) & 1) ? std::optional<int>(byte(pos + 4)) : std::nullopt;
    }
    while (pos < gif.size()) {  // Data sub-blocks up to the empty one.
      const size_t length = byte(pos);
      pos += 1 + length;
      if (length == 0) break;
    }
  }
  return pos < gif.size() && byte(pos) == 0x2C ? transparent : std::nullopt;
}

// A 16-bit grey PNG as PIL holds it ("I"): the uint16 values, 2 bytes each.
absl::StatusOr<DecodedImage> DecodeGrey16(ImageRef& image) {
  OCLIP_ASSIGN_OR_RETURN(Image8 pixels, ReadPixels(image, sizeof(uint16_t)));
  return DecodedImage{std::move(pixels), PilMode::kInt32};
}

// A GIF's first frame as PIL holds it: "P", or "L" when the palette is the
// grey ramp (entry i is (i, i, i)). libvips gives RGB(A) pixels with the
// transparent index black and clear; PIL keeps that index's palette colour
// (convert("RGB") ignores transparency), so it is put back.
absl::StatusOr<DecodedImage> DecodeGif(ImageRef& image, absl::string_view bytes) {
  int* entries = nullptr;
  int count = 0;
  if (vips_image_get_typeof(image.get(), "gif-palette") == 0 ||
      vips_image_get_array_int(image.get(), "gif-palette", &entries, &count) != 0) {
    count = 0;
  }
  const auto colour = [&](int index, int channel) -> uint8_t {
    if (index >= count) return 0;
    return static_cast<uint32_t>(entries[index]) >> (8 * channel) & 0xFF;  // R, G, B, A.
  };
  bool grey_ramp = count > 0;
  for (int i = 0; i < count && grey_ramp; ++i) {
    grey_ramp = colour(i, 0) == i && colour(i, 1) == i && colour(i, 2) == i;
  }
  const int fill = GifTransparentIndex(bytes).value_or(0);
  const uint8_t fill_rgb[3] = {colour(fill, 0), colour(fill, 1), colour(fill, 2)};

  OCLIP_ASSIGN_OR_RETURN(Image8 pixels, ToImage8(image));
  if (pixels.bands == 4) {
    const size_t n = static_cast<size_t>(pixels.width) * pixels.height;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* in = pixels.pixels.data() + i * 4;
      uint8_t* out = pixels.pixels.data() + i * 3;
      const uint8_t rgb[3] = {in[0], in[1], in[2]};
      std::copy_n(in[3] == 0 ? fill_rgb : rgb, 3, out);
    }
    pixels.bands = 3;
    pixels.pixels.resize(n * 3);
  }
  return DecodedImage{std::move(pixels), grey_ramp ? PilMode::kDirect : PilMode::kPalette};
}

}  // namespace

absl::Status ResizeCropNormalize(DecodedImage image, int resized_width, int resized_height,
                                 const CropRect& crop, const PreprocessOptions& options,
                                 float* out) {
  const int size = options.image_size;
  if (crop.width != size || crop.height != size || crop.left < 0 || crop.top < 0 ||
      crop.left + crop.width > resized_width || crop.top + crop.height > resized_height) {
    return absl::InternalError("crop is not an image_size square inside the resized image");
  }
  Image8& decoded = image.pixels;
  const PilMode mode = image.mode;
  const NormalizeTable table(options);
  if (mode == PilMode::kPalette || mode == PilMode::kInt32) {
    const Image8 cropped =
        mode == PilMode::kPalette
            ? ResizeNearestAndCrop(decoded, resized_width, resized_height, crop)
            : ResizeInt32BicubicCropAndClip(decoded, resized_width, resized_height, crop);
    const size_t row_bytes = static_cast<size_t>(size) * cropped.bands;
    for (int y = 0; y < size; ++y) {
      NormalizeRow(cropped.pixels.data() + y * row_bytes, cropped.bands, size, y, table, out);
    }
    return absl::OkStatus();
  }
  // PIL resizes images with alpha premultiplied (RGBa/La), unless the size is
  // unchanged (a plain copy).
  const int bands = decoded.bands;
  const bool has_alpha = mode == PilMode::kDirect && (bands == 2 || bands == 4);
  const bool premultiplied =
      has_alpha && (resized_width != decoded.width || resized_height != decoded.height);
  if (premultiplied) PremultiplyAlpha(decoded);
  Workspace& workspace = ThreadWorkspace();
  workspace.resampler.Start(decoded.width, decoded.height, bands, resized_width, resized_height,
                            crop);
  workspace.resampler.AddRows(0, decoded.height, decoded.pixels.data(),
                              static_cast<size_t>(decoded.width) * bands);
  std::vector<uint8_t>& converted = workspace.row;
  converted.resize(static_cast<size_t>(size) * 4);
  workspace.resampler.Finish([&](int y, const uint8_t* row) {
    if (mode == PilMode::kCmyk) {
      ConvertCmykToRgb(row, size, converted.data());
      return NormalizeRow(converted.data(), 3, size, y, table, out);
    }
    if (premultiplied) {
      std::copy_n(row, static_cast<size_t>(size) * bands, converted.data());
      UnpremultiplyAlpha(converted.data(), size, bands);
      return NormalizeRow(converted.data(), bands, size, y, table, out);
    }
    NormalizeRow(row, bands, size, y, table, out);
  });
  return absl::OkStatus();
}

int64_t RoundHalfToEven(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

std::pair<int, int> ShortSideResize(int width, int height, int size) {
  if (width <= height) {
    return {size, static_cast<int>(static_cast<int64_t>(size) * height / width)};
  }
  return {static_cast<int>(static_cast<int64_t>(size) * width / height), size};
}

namespace {

JpegDecodeOptions JpegOptions(const PreprocessOptions& options) {
  JpegDecodeOptions jpeg;
  jpeg.max_pixels = options.max_pixels;
  if (options.fast_jpeg_shrink) {
    jpeg.shrink_to = options.image_size;
    jpeg.fast_dct = true;
  }
  return jpeg;
}

// The eval transform of a JPEG, streamed: rows go from the decoder to the
// resampler kDecodeRows at a time, and the resampled rows straight into
// `out`. The same pixels as DecodeImageBytes + ResizeCropNormalize.
absl::Status PreprocessJpeg(absl::string_view bytes, const PreprocessOptions& options,
                            float* out) {
  JpegReader reader;
  OCLIP_RETURN_IF_ERROR(reader.Open(bytes, options.max_pixels));
  OCLIP_RETURN_IF_ERROR(reader.Start(JpegOptions(options)));
  const int width = reader.output_width(), height = reader.output_height();
  const int bands = reader.bands();
  const int size = options.image_size;
  if (reader.cmyk()) {
    // Rare: whole image, then the general path.
    DecodedImage decoded;
    decoded.mode = PilMode::kCmyk;
    Image8& image = decoded.pixels;
    image.width = width;
    image.height = height;
    image.bands = bands;
    image.pixels.resize(static_cast<size_t>(width) * height * bands);
    const size_t stride = static_cast<size_t>(width) * bands;
    while (reader.next_row() < height) {
      OCLIP_ASSIGN_OR_RETURN(int rows, reader.ReadRows(image.pixels.data() + reader.next_row() * stride,
                                                       stride, height - reader.next_row()));
      if (rows == 0) return absl::InvalidArgumentError("corrupt JPEG: no rows decoded");
    }
    OCLIP_RETURN_IF_ERROR(reader.Finish());
    const auto [resized_width, resized_height] = ShortSideResize(width, height, size);
    return ResizeCropNormalize(std::move(decoded), resized_width, resized_height,
                               CenterCrop(resized_width, resized_height, size), options, out);
  }
  const auto [resized_width, resized_height] = ShortSideResize(width, height, size);
  Workspace& workspace = ThreadWorkspace();
  CropResampler& resampler = workspace.resampler;
  // The fast mode resamples with PIL's bilinear filter: after the DCT
  // shrink, what is left is a small scale factor, which it handles within
  // the feature-cosine gate at about half the taps of bicubic.
  resampler.Start(width, height, bands, resized_width, resized_height,
                  CenterCrop(resized_width, resized_height, size),
                  options.fast_jpeg_shrink ? ResampleFilter::kBilinear : ResampleFilter::kBicubic);
  // The fast mode decodes only the columns the crop needs (whole iMCUs; its
  // plain upsampling has no edge effects). PIL decodes them all: the parity
  // mode does too.
  int first_column = 0, columns = width;
  if (options.fast_jpeg_shrink) {
    first_column = resampler.first_column();
    columns = resampler.end_column() - first_column;
    OCLIP_RETURN_IF_ERROR(reader.CropColumns(&first_column, &columns));
  }
  const size_t stride = static_cast<size_t>(columns) * bands;
  workspace.rows.resize(stride * kDecodeRows);
  while (reader.next_row() < height) {
    const int y = reader.next_row();
    OCLIP_ASSIGN_OR_RETURN(int rows, reader.ReadRows(workspace.rows.data(), stride, kDecodeRows));
    if (rows == 0) return absl::InvalidArgumentError("corrupt JPEG: no rows decoded");
    resampler.AddRows(y, rows, workspace.rows.data(), stride, first_column, first_column + columns);
  }
  OCLIP_RETURN_IF_ERROR(reader.Finish());
  const NormalizeTable table(options);
  resampler.Finish(
      [&](int y, const uint8_t* row) { NormalizeRow(row, bands, size, y, table, out); });
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DecodedImage> DecodeImageBytes(absl::string_view bytes,
                                              const PreprocessOptions& options) {
  if (bytes.empty()) return absl::InvalidArgumentError("empty image");
  if (LooksLikeJpeg(bytes)) {
    OCLIP_ASSIGN_OR_RETURN(DecodedJpeg decoded, DecodeJpeg(bytes, JpegOptions(options)));
    return DecodedImage{std::move(decoded.image), decoded.cmyk ? PilMode::kCmyk : PilMode::kDirect};
  }
  OCLIP_RETURN_IF_ERROR(EnsureVips());
  ImageRef image(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "access",
                                            VIPS_ACCESS_SEQUENTIAL, "fail", TRUE, nullptr));
  if (image.get() == nullptr) return VipsError("not a decodable image");
  OCLIP_RETURN_IF_ERROR(CheckPixelLimit(image, options));
  const char* loader = nullptr;
  if (vips_image_get_string(image.get(), "vips-loader", &loader) != 0) loader = "";
  if (absl::StartsWith(loader, "gifload")) return DecodeGif(image, bytes);  // "gifload_buffer"
  bool nearest = vips_image_get_typeof(image.get(), "palette-bit-depth") != 0;  // "P"
  if (const std::optional<PngHeader> png = ReadPngHeader(bytes); png && png->colour_type == 0) {
    if (png->bit_depth == 16 && vips_image_get_bands(image.get()) == 1 &&
        vips_image_get_format(image.get()) == VIPS_FORMAT_USHORT) {
      return DecodeGrey16(image);  // "I"
    }
    nearest |= png->bit_depth == 1;  // "1"
  }
  OCLIP_ASSIGN_OR_RETURN(Image8 decoded, ToImage8(image));
  return DecodedImage{std::move(decoded), nearest ? PilMode::kPalette : PilMode::kDirect};
}

absl::Status PreprocessImageBytes(absl::string_view bytes, const PreprocessOptions& options,
                                  float* out) {
  if (LooksLikeJpeg(bytes)) return PreprocessJpeg(bytes, options, out);
  OCLIP_ASSIGN_OR_RETURN(DecodedImage decoded, DecodeImageBytes(bytes, options));
  const int size = options.image_size;
  const auto [resized_width, resized_height] =
      ShortSideResize(decoded.pixels.width, decoded.pixels.height, size);
  return ResizeCropNormalize(std::move(decoded), resized_width, resized_height,
                             CenterCrop(resized_width, resized_height, size), options, out);
}

absl::Status PreprocessImageFile(const std::string& path, const PreprocessOptions& options,
                                 float* out) {
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  absl::Status status = PreprocessImageBytes(file->view(), options, out);
  if (!status.ok()) return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  return status;
}

}  // namespace oclip
