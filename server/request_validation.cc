#include "server/request_validation.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace oclip {

absl::Status ValidateImageInputs(const google::protobuf::RepeatedPtrField<v1::ImageInput>& images,
                                 const LimitsConfig& limits) {
  if (images.empty()) return absl::InvalidArgumentError("the request has no images");
  if (images.size() > limits.max_items_per_request) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", images.size(),
                                                   " images; the limit is ",
                                                   limits.max_items_per_request));
  }
  for (int i = 0; i < images.size(); ++i) {
    const v1::ImageInput& image = images.Get(i);
    switch (image.source_case()) {
      case v1::ImageInput::kData:
        if (image.data().empty()) {
          return absl::InvalidArgumentError(absl::StrCat("image ", i, ": no bytes"));
        }
        if (static_cast<int64_t>(image.data().size()) > limits.max_image_bytes) {
          return absl::InvalidArgumentError(absl::StrCat("image ", i, ": ", image.data().size(),
                                                         " bytes; the limit is ",
                                                         limits.max_image_bytes));
        }
        break;
      case v1::ImageInput::kUri: {
        const bool allowed = std::any_of(
            limits.allowed_uri_prefixes.begin(), limits.allowed_uri_prefixes.end(),
            [&](const std::string& prefix) { return absl::StartsWith(image.uri(), prefix); });
        // A ".." segment could climb out of an allowed directory.
        const bool climbs = absl::StrContains(image.uri(), "/../") ||
                            absl::EndsWith(image.uri(), "/..");
        if (!allowed || climbs) {
          return absl::InvalidArgumentError(absl::StrCat(
              "image ", i, ": uri '", image.uri(), "' is not under an allowed prefix"));
        }
        break;
      }
      case v1::ImageInput::SOURCE_NOT_SET:
        return absl::InvalidArgumentError(absl::StrCat("image ", i, ": neither data nor uri"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateTextInputs(const google::protobuf::RepeatedPtrField<std::string>& texts,
                                const LimitsConfig& limits) {
  if (texts.empty()) return absl::InvalidArgumentError("the request has no texts");
  if (texts.size() > limits.max_items_per_request) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", texts.size(),
                                                   " texts; the limit is ",
                                                   limits.max_items_per_request));
  }
  for (int i = 0; i < texts.size(); ++i) {
    if (static_cast<int64_t>(texts.Get(i).size()) > limits.max_text_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("text ", i, ": ", texts.Get(i).size(),
                                                     " bytes; the limit is ",
                                                     limits.max_text_bytes));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateClassifyLabels(const v1::ClassifyRequest& request,
                                    const LimitsConfig& limits) {
  if (request.labels().empty()) return absl::InvalidArgumentError("the request has no labels");
  if (request.labels_size() > limits.max_labels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request has ", request.labels_size(), " labels; the limit is ", limits.max_labels));
  }
  if (request.templates_size() > limits.max_templates) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", request.templates_size(),
                                                   " templates; the limit is ",
                                                   limits.max_templates));
  }
  for (int i = 0; i < request.labels_size(); ++i) {
    if (static_cast<int64_t>(request.labels(i).size()) > limits.max_text_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("label ", i, ": longer than ",
                                                     limits.max_text_bytes, " bytes"));
    }
  }
  for (int i = 0; i < request.templates_size(); ++i) {
    const std::string& prompt_template = request.templates(i);
    if (!absl::StrContains(prompt_template, "{}")) {
      return absl::InvalidArgumentError(
          absl::StrCat("template ", i, " ('", prompt_template, "') has no {} for the label"));
    }
    if (static_cast<int64_t>(prompt_template.size()) > limits.max_text_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("template ", i, ": longer than ",
                                                     limits.max_text_bytes, " bytes"));
    }
  }
  return absl::OkStatus();
}

}  // namespace oclip
