#include "model/image/jpeg_decoder.h"

#include <csetjmp>
#include <cstdio>
#include <string>

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>
#include <jerror.h>

#include "absl/strings/str_cat.h"

namespace oclip {
namespace {

struct ErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

[[noreturn]] void OnError(j_common_ptr info) {
  auto* errors = reinterpret_cast<ErrorManager*>(info->err);
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings are ignored as PIL ignores them, except a premature end of data:
// PIL refuses truncated images.
void OnMessage(j_common_ptr info, int level) {
  if (level == -1 && info->err->msg_code == JWRN_JPEG_EOF) {
    reinterpret_cast<ErrorManager*>(info->err)->truncated = true;
  }
}

// Owns a decompressor. Everything that can longjmp runs inside Run(), which
// holds no objects with destructors, so the jump skips nothing.
class Decompressor {
 public:
  Decompressor() {
    info_.err = jpeg_std_error(&errors_.base);
    errors_.base.error_exit = OnError;
    errors_.base.emit_message = OnMessage;
    errors_.truncated = false;
    errors_.message[0] = '\0';
    jpeg_create_decompress(&info_);
  }
  ~Decompressor() { jpeg_destroy_decompress(&info_); }

  // Reads the header; false on error (message() says why).
  bool ReadHeader(absl::string_view bytes) {
    if (setjmp(errors_.jump)) return false;
    jpeg_mem_src(&info_, reinterpret_cast<const unsigned char*>(bytes.data()),
                 static_cast<unsigned long>(bytes.size()));
    jpeg_read_header(&info_, TRUE);
    return true;
  }

  // Decodes into `out` (sized here); false on error.
  bool Decode(const JpegDecodeOptions& options, Image8* out) {
    if (setjmp(errors_.jump)) return false;
    info_.scale_num = 1;
    info_.scale_denom = static_cast<unsigned int>(options.scale_denom);
    info_.dct_method = options.fast_dct ? JDCT_IFAST : JDCT_ISLOW;
    info_.do_fancy_upsampling = options.fast_dct ? FALSE : TRUE;
    switch (info_.jpeg_color_space) {
      case JCS_GRAYSCALE: info_.out_color_space = JCS_GRAYSCALE; break;
      case JCS_CMYK:
      case JCS_YCCK: info_.out_color_space = JCS_CMYK; break;
      default: info_.out_color_space = JCS_RGB; break;
    }
    jpeg_start_decompress(&info_);
    out->width = static_cast<int>(info_.output_width);
    out->height = static_cast<int>(info_.output_height);
    out->bands = info_.output_components;
    out->pixels.resize(static_cast<size_t>(out->width) * out->height * out->bands);
    while (info_.output_scanline < info_.output_height) {
      JSAMPROW row = out->pixels.data() +
                     static_cast<size_t>(info_.output_scanline) * out->width * out->bands;
      jpeg_read_scanlines(&info_, &row, 1);
    }
    jpeg_finish_decompress(&info_);
    return true;
  }

  const jpeg_decompress_struct& info() const { return info_; }
  bool truncated() const { return errors_.truncated; }
  std::string message() const { return errors_.message; }

 private:
  jpeg_decompress_struct info_;
  ErrorManager errors_;
};

}  // namespace

bool LooksLikeJpeg(absl::string_view bytes) {
  return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 &&
         static_cast<unsigned char>(bytes[2]) == 0xFF;
}

absl::StatusOr<std::pair<int, int>> JpegDimensions(absl::string_view bytes) {
  Decompressor decompressor;
  if (!decompressor.ReadHeader(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG: ", decompressor.message()));
  }
  return std::make_pair(static_cast<int>(decompressor.info().image_width),
                        static_cast<int>(decompressor.info().image_height));
}

absl::StatusOr<DecodedJpeg> DecodeJpeg(absl::string_view bytes, const JpegDecodeOptions& options) {
  Decompressor decompressor;
  if (!decompressor.ReadHeader(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG: ", decompressor.message()));
  }
  const jpeg_decompress_struct& info = decompressor.info();
  if (static_cast<int64_t>(info.image_width) * info.image_height > options.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat("image of ", info.image_width, "x",
                                                   info.image_height, " pixels exceeds the limit of ",
                                                   options.max_pixels));
  }
  DecodedJpeg decoded;
  Image8& image = decoded.image;
  if (!decompressor.Decode(options, &image)) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG: ", decompressor.message()));
  }
  if (decompressor.truncated()) return absl::InvalidArgumentError("truncated JPEG");
  decoded.cmyk = info.out_color_space == JCS_CMYK;
  if (decoded.cmyk && info.saw_Adobe_marker) {
    // Adobe applications store CMYK inverted; PIL reads such files as "CMYK;I".
    for (uint8_t& v : image.pixels) v = static_cast<uint8_t>(255 - v);
  }
  return decoded;
}

}  // namespace oclip
