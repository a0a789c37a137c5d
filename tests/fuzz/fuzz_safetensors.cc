// A .safetensors file (a downloaded checkpoint, an embeddings file): the
// 8-byte header length, the JSON header, dtypes, shapes and data offsets.
// Every tensor the reader hands out must lie inside the file.
#include <memory>

#include "core/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(safetensors) {
  const std::string& path = oclip::fuzz::WriteScratchFile(data, size);
  auto reader = oclip::SafetensorsReader::Open(path);
  if (!reader.ok()) return 0;
  for (const std::string& name : (*reader)->names()) {
    auto view = (*reader)->Get(name);
    OCLIP_FUZZ_CHECK(view.ok());
    for (int64_t d : view->shape) OCLIP_FUZZ_CHECK(d >= 0);
    OCLIP_FUZZ_CHECK(view->size_bytes ==
                     static_cast<size_t>(view->num_elements()) * oclip::DTypeSize(view->dtype));
    // Touch the first and last byte: ASan reports a view outside the mapping.
    if (view->size_bytes > 0) {
      volatile uint8_t first = view->data[0];
      volatile uint8_t last = view->data[view->size_bytes - 1];
      (void)first;
      (void)last;
    }
  }
  return 0;
}
