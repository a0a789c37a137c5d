// A serialized EncodeImageRequest / EncodeTextRequest / ClassifyRequest (the
// first byte picks which) parsed as gRPC would and fed to the server's
// request validation (server/request_validation). What passes must keep the
// promises the handlers rely on.
#include "absl/strings/match.h"
#include "server/request_validation.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

oclip::LimitsConfig SmallLimits() {
  oclip::LimitsConfig limits;
  limits.max_items_per_request = 4;
  limits.max_image_bytes = 64;
  limits.max_text_bytes = 32;
  limits.max_labels = 5;
  limits.max_templates = 3;
  limits.allowed_uri_prefixes = {"file:///data/"};
  return limits;
}

void CheckValidImages(const google::protobuf::RepeatedPtrField<oclip::v1::ImageInput>& images,
                      const oclip::LimitsConfig& limits) {
  OCLIP_FUZZ_CHECK(!images.empty() && images.size() <= limits.max_items_per_request);
  for (const auto& image : images) {
    if (image.source_case() == oclip::v1::ImageInput::kData) {
      OCLIP_FUZZ_CHECK(!image.data().empty());
      OCLIP_FUZZ_CHECK(static_cast<int64_t>(image.data().size()) <= limits.max_image_bytes);
    } else {
      OCLIP_FUZZ_CHECK(image.source_case() == oclip::v1::ImageInput::kUri);
      OCLIP_FUZZ_CHECK(absl::StartsWith(image.uri(), "file:///data/"));
      OCLIP_FUZZ_CHECK(!absl::StrContains(image.uri(), "/../"));
    }
  }
}

}  // namespace

OCLIP_FUZZ_TARGET(server_request) {
  if (size < 1) return 0;
  static const oclip::LimitsConfig limits = SmallLimits();
  const void* bytes = data + 1;
  const int n = static_cast<int>(size - 1);
  switch (data[0] % 3) {
    case 0: {
      oclip::v1::EncodeImageRequest request;
      if (!request.ParseFromArray(bytes, n)) return 0;
      if (oclip::ValidateImageInputs(request.images(), limits).ok()) {
        CheckValidImages(request.images(), limits);
      }
      break;
    }
    case 1: {
      oclip::v1::EncodeTextRequest request;
      if (!request.ParseFromArray(bytes, n)) return 0;
      if (oclip::ValidateTextInputs(request.texts(), limits).ok()) {
        OCLIP_FUZZ_CHECK(!request.texts().empty());
        OCLIP_FUZZ_CHECK(request.texts_size() <= limits.max_items_per_request);
        for (const std::string& text : request.texts()) {
          OCLIP_FUZZ_CHECK(static_cast<int64_t>(text.size()) <= limits.max_text_bytes);
        }
      }
      break;
    }
    default: {
      oclip::v1::ClassifyRequest request;
      if (!request.ParseFromArray(bytes, n)) return 0;
      if (oclip::ValidateImageInputs(request.images(), limits).ok()) {
        CheckValidImages(request.images(), limits);
        if (oclip::ValidateClassifyLabels(request, limits).ok()) {
          OCLIP_FUZZ_CHECK(!request.labels().empty());
          OCLIP_FUZZ_CHECK(request.labels_size() <= limits.max_labels);
          OCLIP_FUZZ_CHECK(request.templates_size() <= limits.max_templates);
          for (const std::string& t : request.templates()) {
            OCLIP_FUZZ_CHECK(absl::StrContains(t, "{}"));
          }
        }
      }
      break;
    }
  }
  return 0;
}
