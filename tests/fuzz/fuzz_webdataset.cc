// A webdataset tar shard read through a byte source (libarchive streaming,
// key grouping, size limits). Every delivered sample must have an image.
#include <memory>

#include "data/webdataset.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(webdataset) {
  const std::string& path = oclip::fuzz::WriteScratchFile(data, size);
  oclip::WebDatasetOptions options;
  options.max_member_bytes = 1 << 16;
  options.read_block_bytes = 4096;
  auto reader = oclip::WebDatasetShardReader::Open(path, options);
  OCLIP_FUZZ_CHECK(reader.ok());
  oclip::Sample sample;
  for (int i = 0; i < 10000; ++i) {
    absl::StatusOr<bool> next = (*reader)->Next(&sample);
    if (!next.ok()) continue;  // The error is returned once, then false.
    if (!*next) break;
    OCLIP_FUZZ_CHECK(!sample.image_extension.empty());
    OCLIP_FUZZ_CHECK(static_cast<int64_t>(sample.image.size()) <= options.max_member_bytes);
  }
  return 0;
}
