// A CSV/TSV sample list (RFC 4180 quoting, BOM, CRLF, blank lines). The first
// byte picks the separator; images are not read, so only the parser runs.
#include <memory>

#include "data/csv_source.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(csv) {
  if (size < 1) return 0;
  const std::string& path = oclip::fuzz::WriteScratchFile(data + 1, size - 1);
  oclip::CsvOptions options;
  options.path = path;
  options.image_key = "filepath";
  options.caption_key = "title";
  options.separator = (data[0] & 1) != 0 ? ',' : '\t';
  options.read_images = false;
  options.image_root = "/nonexistent";
  options.max_record_bytes = 4096;
  auto source = oclip::CsvSource::Create(options);
  if (!source.ok()) return 0;
  oclip::Sample sample;
  for (int i = 0; i < 100000; ++i) {
    absl::StatusOr<bool> next = (*source)->Next(&sample);
    if (!next.ok() || !*next) break;
    OCLIP_FUZZ_CHECK(sample.has_caption);
  }
  return 0;
}
