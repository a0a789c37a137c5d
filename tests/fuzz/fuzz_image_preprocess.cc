// Image bytes from a client (gRPC EncodeImage, webdataset members) through
// the eval transform: decode (libjpeg-turbo / libvips), resize, crop,
// normalize. The first byte picks the PIL-exact or the fast JPEG path.
#include <cmath>
#include <vector>

#include "model/image/preprocess.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(image_preprocess) {
  if (size < 1) return 0;
  oclip::PreprocessOptions options;
  options.image_size = 24;
  options.max_pixels = 1 << 20;  // Keeps each input fast; the check itself is fuzzed.
  options.fast_jpeg_shrink = (data[0] & 1) != 0;
  std::vector<float> out(3 * 24 * 24, NAN);
  const absl::Status status = oclip::PreprocessImageBytes(
      absl::string_view(reinterpret_cast<const char*>(data + 1), size - 1), options, out.data());
  if (status.ok()) {
    for (float v : out) OCLIP_FUZZ_CHECK(std::isfinite(v));
  } else {
    OCLIP_FUZZ_CHECK(!status.message().empty());
  }
  return 0;
}
