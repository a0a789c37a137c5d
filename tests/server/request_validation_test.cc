// server/request_validation: each limit of LimitsConfig is enforced at its
// boundary (at the limit passes, one over fails with a message naming the
// item), for the checks the service runs before any work.
#include "server/request_validation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace oclip {
namespace {

using ::testing::HasSubstr;

LimitsConfig Limits() {
  LimitsConfig limits;
  limits.max_items_per_request = 2;
  limits.max_image_bytes = 4;
  limits.max_text_bytes = 5;
  limits.max_labels = 2;
  limits.max_templates = 1;
  limits.allowed_uri_prefixes = {"file:///data/"};
  return limits;
}

v1::EncodeImageRequest Images(std::initializer_list<std::string> data) {
  v1::EncodeImageRequest request;
  for (const std::string& d : data) request.add_images()->set_data(d);
  return request;
}

void ExpectInvalid(const absl::Status& status, const std::string& message) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(message));
}

TEST(RequestValidationTest, ImageCountAndBytes) {
  EXPECT_TRUE(ValidateImageInputs(Images({"abcd", "a"}).images(), Limits()).ok());
  ExpectInvalid(ValidateImageInputs(Images({}).images(), Limits()), "the request has no images");
  ExpectInvalid(ValidateImageInputs(Images({"a", "b", "c"}).images(), Limits()),
                "the request has 3 images; the limit is 2");
  ExpectInvalid(ValidateImageInputs(Images({"a", "abcde"}).images(), Limits()),
                "image 1: 5 bytes; the limit is 4");
  ExpectInvalid(ValidateImageInputs(Images({""}).images(), Limits()), "image 0: no bytes");
  v1::EncodeImageRequest unset;
  unset.add_images();
  ExpectInvalid(ValidateImageInputs(unset.images(), Limits()), "image 0: neither data nor uri");
}

TEST(RequestValidationTest, ImageUris) {
  v1::EncodeImageRequest request;
  request.add_images()->set_uri("file:///data/cat.jpg");
  request.add_images()->set_uri("file:///data/sub/..cat.jpg");
  EXPECT_TRUE(ValidateImageInputs(request.images(), Limits()).ok());
  for (const char* uri : {"file:///etc/passwd", "file:///data/../etc/passwd", "file:///data/a/..",
                          "http://example.com/data/cat.jpg"}) {
    v1::EncodeImageRequest bad;
    bad.add_images()->set_uri(uri);
    ExpectInvalid(ValidateImageInputs(bad.images(), Limits()), "is not under an allowed prefix");
  }
  LimitsConfig no_uris = Limits();
  no_uris.allowed_uri_prefixes.clear();
  ExpectInvalid(ValidateImageInputs(request.images(), no_uris), "image 0: uri");
}

TEST(RequestValidationTest, Texts) {
  v1::EncodeTextRequest request;
  ExpectInvalid(ValidateTextInputs(request.texts(), Limits()), "the request has no texts");
  request.add_texts("12345");
  request.add_texts("");
  EXPECT_TRUE(ValidateTextInputs(request.texts(), Limits()).ok());
  request.set_texts(1, "123456");
  ExpectInvalid(ValidateTextInputs(request.texts(), Limits()), "text 1: 6 bytes; the limit is 5");
  request.set_texts(1, "x");
  request.add_texts("y");
  ExpectInvalid(ValidateTextInputs(request.texts(), Limits()),
                "the request has 3 texts; the limit is 2");
}

TEST(RequestValidationTest, ClassifyLabelsAndTemplates) {
  v1::ClassifyRequest request;
  ExpectInvalid(ValidateClassifyLabels(request, Limits()), "the request has no labels");
  request.add_labels("dog");
  request.add_labels("cat");
  EXPECT_TRUE(ValidateClassifyLabels(request, Limits()).ok());
  request.add_templates("a {}.");
  EXPECT_TRUE(ValidateClassifyLabels(request, Limits()).ok());
  request.set_templates(0, "a dog");
  ExpectInvalid(ValidateClassifyLabels(request, Limits()), "template 0 ('a dog') has no {}");
  request.set_templates(0, "a {} !");
  ExpectInvalid(ValidateClassifyLabels(request, Limits()), "template 0: longer than 5 bytes");
  request.set_templates(0, "{}");
  request.add_templates("{}");
  ExpectInvalid(ValidateClassifyLabels(request, Limits()),
                "the request has 2 templates; the limit is 1");
  request.mutable_templates()->RemoveLast();
  request.set_labels(1, "horses");
  ExpectInvalid(ValidateClassifyLabels(request, Limits()), "label 1: longer than 5 bytes");
  request.add_labels("x");
  ExpectInvalid(ValidateClassifyLabels(request, Limits()),
                "the request has 3 labels; the limit is 2");
}

}  // namespace
}  // namespace oclip
