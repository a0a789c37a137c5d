#include "model/image/jpeg_decoder.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <limits>
#include <string>

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>
#include <jerror.h>

#include "absl/strings/str_cat.h"
#include "core/status.h"

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

}  // namespace

// Owns a decompressor. Everything that can longjmp runs inside the methods
// that call setjmp, which hold no objects with destructors, so the jump skips
// nothing.
class JpegReader::Decompressor {
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

  bool Start(const JpegDecodeOptions& options) {
    if (setjmp(errors_.jump)) return false;
    info_.scale_num = static_cast<unsigned int>(options.scale_num);
    info_.scale_denom = 8;
    info_.dct_method = options.fast_dct ? JDCT_IFAST : JDCT_ISLOW;
    info_.do_fancy_upsampling = options.fast_dct ? FALSE : TRUE;
    switch (info_.jpeg_color_space) {
      case JCS_GRAYSCALE: info_.out_color_space = JCS_GRAYSCALE; break;
      case JCS_CMYK:
      case JCS_YCCK: info_.out_color_space = JCS_CMYK; break;
      default: info_.out_color_space = JCS_RGB; break;
    }
    jpeg_start_decompress(&info_);
    started_ = true;
    return true;
  }

  // Up to `count` (at most kMaxRows) rows; -1 on error.
  static constexpr int kMaxRows = 64;
  int ReadRows(uint8_t* rows, size_t stride, int count) {
    JSAMPROW pointers[kMaxRows];
    count = std::min(count, kMaxRows);
    for (int i = 0; i < count; ++i) pointers[i] = rows + i * stride;
    if (setjmp(errors_.jump)) return -1;
    int done = 0;
    while (done < count && info_.output_scanline < info_.output_height) {
      done += static_cast<int>(
          jpeg_read_scanlines(&info_, pointers + done, static_cast<JDIMENSION>(count - done)));
    }
    return done;
  }

  bool CropColumns(int* first, int* width) {
    JDIMENSION x = static_cast<JDIMENSION>(*first), w = static_cast<JDIMENSION>(*width);
    if (setjmp(errors_.jump)) return false;
    jpeg_crop_scanline(&info_, &x, &w);
    *first = static_cast<int>(x);
    *width = static_cast<int>(w);
    return true;
  }

  bool Finish() {
    if (setjmp(errors_.jump)) return false;
    jpeg_finish_decompress(&info_);
    started_ = false;
    return true;
  }

  const jpeg_decompress_struct& info() const { return info_; }
  bool started() const { return started_; }
  bool truncated() const { return errors_.truncated; }
  std::string message() const { return errors_.message; }

 private:
  jpeg_decompress_struct info_;
  ErrorManager errors_;
  bool started_ = false;
};

namespace {

absl::Status Corrupt(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("corrupt JPEG: ", message));
}

}  // namespace

JpegReader::JpegReader() : decompressor_(std::make_unique<Decompressor>()) {}
JpegReader::~JpegReader() = default;

absl::Status JpegReader::Open(absl::string_view bytes, int64_t max_pixels) {
  if (!decompressor_->ReadHeader(bytes)) return Corrupt(decompressor_->message());
  const jpeg_decompress_struct& info = decompressor_->info();
  if (static_cast<int64_t>(info.image_width) * info.image_height > max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat("image of ", info.image_width, "x",
                                                   info.image_height, " pixels exceeds the limit of ",
                                                   max_pixels));
  }
  return absl::OkStatus();
}

int JpegReader::width() const { return static_cast<int>(decompressor_->info().image_width); }
int JpegReader::height() const { return static_cast<int>(decompressor_->info().image_height); }

absl::Status JpegReader::Start(const JpegDecodeOptions& options) {
  JpegDecodeOptions resolved = options;
  if (options.shrink_to > 0) resolved.scale_num = JpegShrinkScale(width(), height(), options.shrink_to);
  if (resolved.scale_num < 1 || resolved.scale_num > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("JPEG scale must be 1/8 to 16/8, got ", resolved.scale_num, "/8"));
  }
  if (!decompressor_->Start(resolved)) return Corrupt(decompressor_->message());
  return absl::OkStatus();
}

int JpegReader::output_width() const { return static_cast<int>(decompressor_->info().output_width); }
int JpegReader::output_height() const {
  return static_cast<int>(decompressor_->info().output_height);
}
int JpegReader::bands() const { return decompressor_->info().output_components; }
bool JpegReader::cmyk() const { return decompressor_->info().out_color_space == JCS_CMYK; }
int JpegReader::next_row() const { return static_cast<int>(decompressor_->info().output_scanline); }

absl::StatusOr<int> JpegReader::ReadRows(uint8_t* rows, size_t stride, int count) {
  if (!decompressor_->started()) return absl::FailedPreconditionError("JPEG decoding not started");
  const int done = decompressor_->ReadRows(rows, stride, count);
  if (done < 0) return Corrupt(decompressor_->message());
  if (cmyk() && decompressor_->info().saw_Adobe_marker) {
    // Adobe applications store CMYK inverted; PIL reads such files as "CMYK;I".
    const size_t row_bytes = static_cast<size_t>(output_width()) * 4;
    for (int r = 0; r < done; ++r) {
      uint8_t* row = rows + r * stride;
      for (size_t i = 0; i < row_bytes; ++i) row[i] = static_cast<uint8_t>(255 - row[i]);
    }
  }
  return done;
}

absl::Status JpegReader::CropColumns(int* first, int* width) {
  if (!decompressor_->started() || next_row() != 0) {
    return absl::FailedPreconditionError("JPEG columns can only be cropped before the first row");
  }
  if (*first < 0 || *width <= 0 || *first + *width > output_width()) {
    return absl::InvalidArgumentError("JPEG column crop outside the image");
  }
  if (!decompressor_->CropColumns(first, width)) return Corrupt(decompressor_->message());
  return absl::OkStatus();
}

absl::Status JpegReader::Finish() {
  if (!decompressor_->Finish()) return Corrupt(decompressor_->message());
  if (decompressor_->truncated()) return absl::InvalidArgumentError("truncated JPEG");
  return absl::OkStatus();
}

int JpegShrinkScale(int width, int height, int size) {
  const int64_t shorter = std::min(width, height);
  for (int m = 1; m < 8; ++m) {
    if ((shorter * m + 7) / 8 >= size) return m;
  }
  return 8;
}

bool LooksLikeJpeg(absl::string_view bytes) {
  return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 &&
         static_cast<unsigned char>(bytes[2]) == 0xFF;
}

absl::StatusOr<std::pair<int, int>> JpegDimensions(absl::string_view bytes) {
  JpegReader reader;
  OCLIP_RETURN_IF_ERROR(reader.Open(bytes, std::numeric_limits<int64_t>::max()));
  return std::make_pair(reader.width(), reader.height());
}

absl::StatusOr<DecodedJpeg> DecodeJpeg(absl::string_view bytes, const JpegDecodeOptions& options) {
  JpegReader reader;
  OCLIP_RETURN_IF_ERROR(reader.Open(bytes, options.max_pixels));
  OCLIP_RETURN_IF_ERROR(reader.Start(options));
  DecodedJpeg decoded;
  Image8& image = decoded.image;
  image.width = reader.output_width();
  image.height = reader.output_height();
  image.bands = reader.bands();
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * image.bands);
  const size_t stride = static_cast<size_t>(image.width) * image.bands;
  while (reader.next_row() < image.height) {
    OCLIP_ASSIGN_OR_RETURN(int rows,
                           reader.ReadRows(image.pixels.data() + reader.next_row() * stride,
                                           stride, image.height - reader.next_row()));
    if (rows == 0) return absl::InvalidArgumentError("corrupt JPEG: no rows decoded");
  }
  OCLIP_RETURN_IF_ERROR(reader.Finish());
  decoded.cmyk = reader.cmyk();
  return decoded;
}

}  // namespace oclip
