// The checks a request's payload must pass before the server does any work
// for it: item counts, byte sizes, image sources, label and template shapes,
// against the operator's LimitsConfig. Pure functions of the message and the
// limits (no model, no gRPC call, no I/O), so that the service and the
// request fuzzer (tests/fuzz/fuzz_server_request.cc) run the same code.
//
// Each returns OK or INVALID_ARGUMENT naming the first offending item.
// Message-size and authentication checks stay in ClipService (they need the
// call).
#ifndef OCLIP_SERVER_REQUEST_VALIDATION_H_
#define OCLIP_SERVER_REQUEST_VALIDATION_H_

#include "absl/status/status.h"
#include "oclip/v1/clip.pb.h"
#include "server/server_config.h"

namespace oclip {

// The images of EncodeImage, Classify, the image stream and an image Search:
// 1 to max_items_per_request of them, each either non-empty inline bytes of
// at most max_image_bytes, or a uri under one of allowed_uri_prefixes
// without a ".." segment.
absl::Status ValidateImageInputs(const google::protobuf::RepeatedPtrField<v1::ImageInput>& images,
                                 const LimitsConfig& limits);

// The texts of EncodeText: 1 to max_items_per_request, each at most
// max_text_bytes.
absl::Status ValidateTextInputs(const google::protobuf::RepeatedPtrField<std::string>& texts,
                                const LimitsConfig& limits);

// The labels and templates of Classify (its images are checked by
// ValidateImageInputs first): 1 to max_labels labels of at most
// max_text_bytes; at most max_templates templates, each holding "{}" and at
// most max_text_bytes long.
absl::Status ValidateClassifyLabels(const v1::ClassifyRequest& request,
                                    const LimitsConfig& limits);

}  // namespace oclip

#endif  // OCLIP_SERVER_REQUEST_VALIDATION_H_
