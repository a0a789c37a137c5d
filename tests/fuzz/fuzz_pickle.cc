// oclip's restricted unpickler (model/checkpoint/pickle) on arbitrary bytes:
// the data.pkl of a torch.save checkpoint. Persistent ids load as a small
// float storage, as the archive reader would hand one out.
#include "model/checkpoint/pickle.h"
#include "tests/fuzz/fuzz_target.h"

OCLIP_FUZZ_TARGET(pickle) {
  oclip::UnpickleOptions options;
  options.source_name = "fuzz";
  options.persistent_load = [](const oclip::PyValue&) -> absl::StatusOr<oclip::PyValue> {
    return oclip::PyValue::Storage(torch::zeros({16}, torch::kFloat));
  };
  auto value = oclip::Unpickle(absl::Span<const uint8_t>(data, size), options);
  if (value.ok()) (void)value->DebugString();
  return 0;
}
