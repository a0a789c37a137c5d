// JPEG decoding straight to memory with libjpeg(-turbo), the decoder PIL uses,
// with PIL's settings (islow DCT, fancy upsampling): the same pixels as
// Image.open(...).convert() of a JPEG, without libvips's per-image pipeline
// set-up, which costs about as much as the decode itself for small images.
//
// Handles 8-bit grey, YCbCr/RGB and CMYK/YCCK JPEGs (CMYK comes back as 4
// bands, inverted as PIL reads Adobe CMYK: "CMYK;I"); INVALID_ARGUMENT for
// corrupt data. libjpeg errors are caught (longjmp) and never abort the
// process. Thread-safe (a JpegReader is used by one thread at a time).
//
// JpegReader hands out rows as they are decoded, so that the caller can
// resample them block by block instead of holding the whole image;
// DecodeJpeg decodes the whole image into memory.

#ifndef OCLIP_MODEL_IMAGE_JPEG_DECODER_H_
#define OCLIP_MODEL_IMAGE_JPEG_DECODER_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/image/pil_resample.h"

namespace oclip {

bool LooksLikeJpeg(absl::string_view bytes);

struct JpegDecodeOptions {
  int64_t max_pixels = 178956970;  // Checked from the header, before decoding.
  // 1..16: decode at scale_num/8 in the DCT domain (libjpeg-turbo's scaled
  // IDCTs; 8 is full size, below 8 shrink-on-load).
  int scale_num = 8;
  // When > 0, overrides scale_num with JpegShrinkScale(width, height,
  // shrink_to) once the header is read.
  int shrink_to = 0;
  // Fast integer DCT and plain (not "fancy") chroma upsampling: faster, and
  // no longer PIL's pixels.
  bool fast_dct = false;
};

class JpegReader {
 public:
  JpegReader();
  ~JpegReader();
  JpegReader(const JpegReader&) = delete;
  JpegReader& operator=(const JpegReader&) = delete;

  // Reads the header of `bytes`, which must outlive the reader, and checks
  // the pixel limit. INVALID_ARGUMENT for a corrupt header or too many pixels.
  absl::Status Open(absl::string_view bytes, int64_t max_pixels);
  // Full size, from the header.
  int width() const;
  int height() const;

  // Starts decoding with `options` (max_pixels is ignored here); then
  // output_width() x output_height() pixels of bands() bytes.
  absl::Status Start(const JpegDecodeOptions& options);
  int output_width() const;
  int output_height() const;
  int bands() const;
  bool cmyk() const;  // 4 bands of C, M, Y, K (Adobe inversion undone)
  int next_row() const;

  // Before the first row: decode only columns [*first, *first + *width),
  // widened by libjpeg-turbo to whole iMCU columns (the widened range comes
  // back in *first and *width; rows then hold *width pixels). The pixels are
  // a full decode's, except next to the range's edges with fancy
  // upsampling, which treats them as the image's edges.
  absl::Status CropColumns(int* first, int* width);

  // Decodes up to `count` next rows into `rows`, `stride` bytes apart;
  // returns how many (fewer only at the end of the image).
  absl::StatusOr<int> ReadRows(uint8_t* rows, size_t stride, int count);
  // After the last row: INVALID_ARGUMENT if the data ended early (PIL
  // refuses truncated images) or is corrupt.
  absl::Status Finish();

 private:
  class Decompressor;
  std::unique_ptr<Decompressor> decompressor_;
};

struct DecodedJpeg {
  Image8 image;
  bool cmyk = false;  // 4 bands of C, M, Y, K
};

absl::StatusOr<DecodedJpeg> DecodeJpeg(absl::string_view bytes, const JpegDecodeOptions& options);

// The smallest M in 1..8 for which libjpeg's M/8 scaled output (each side
// rounded up) still has a shorter side of at least `size`; 8 if none.
int JpegShrinkScale(int width, int height, int size);

// Width and height from the header only.
absl::StatusOr<std::pair<int, int>> JpegDimensions(absl::string_view bytes);

}  // namespace oclip

#endif  // OCLIP_MODEL_IMAGE_JPEG_DECODER_H_
