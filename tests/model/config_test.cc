#include "model/config.h"

#include <gtest/gtest.h>

#include "tests/model/reference.h"

namespace oclip::testing {
namespace {

TEST(ConfigTest, RegistryListsTheReleasedModels) {
  const auto names = ListModelNames();
  for (const char* name :
       {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16",
        "ViT-B-16-plus-240", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-g-14",
        "RN50-quickgelu", "RN101-quickgelu", "ViT-B-32-quickgelu", "ViT-B-16-quickgelu",
        "ViT-L-14-quickgelu", "roberta-ViT-B-32", "xlm-roberta-base-ViT-B-32",
        "xlm-roberta-large-ViT-H-14"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
}

// The registry's numbers must agree with OpenCLIP's JSON configs.
class RegistryAgreesWithOpenClipJson : public ::testing::TestWithParam<std::string> {};

TEST_P(RegistryAgreesWithOpenClipJson, SameArchitecture) {
  auto from_json = ResolveModelConfig(ReferencePath("configs/" + GetParam() + ".json"));
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  auto builtin = GetBuiltinModelConfig(GetParam());
  ASSERT_TRUE(builtin.ok()) << builtin.status();
  EXPECT_EQ(from_json->embed_dim, builtin->embed_dim);
  EXPECT_EQ(from_json->quick_gelu, builtin->quick_gelu);
  EXPECT_EQ(from_json->vision.resnet_layers, builtin->vision.resnet_layers);
  EXPECT_EQ(from_json->vision.width, builtin->vision.width);
  EXPECT_EQ(from_json->vision.image_size, builtin->vision.image_size);
  EXPECT_EQ(from_json->vision.heads(), builtin->vision.heads());
  EXPECT_EQ(from_json->vision.mlp_width(), builtin->vision.mlp_width());
  EXPECT_EQ(from_json->vision.grid_size(), builtin->vision.grid_size());
  if (!builtin->vision.is_resnet()) {
    EXPECT_EQ(from_json->vision.layers, builtin->vision.layers);
    EXPECT_EQ(from_json->vision.patch_size, builtin->vision.patch_size);
  }
  EXPECT_EQ(from_json->text.hf_model_name, builtin->text.hf_model_name);
  if (!builtin->text.is_hf()) {
    EXPECT_EQ(from_json->text.width, builtin->text.width);
    EXPECT_EQ(from_json->text.heads, builtin->text.heads);
    EXPECT_EQ(from_json->text.layers, builtin->text.layers);
    EXPECT_EQ(from_json->text.context_length, builtin->text.context_length);
    EXPECT_EQ(from_json->text.vocab_size, builtin->text.vocab_size);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Seeds, RegistryAgreesWithOpenClipJson,
    ::testing::Values("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16",
                      "ViT-B-16-plus-240", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-g-14",
                      "RN50-quickgelu", "RN101-quickgelu", "ViT-B-32-quickgelu",
                      "ViT-B-16-quickgelu", "ViT-L-14-quickgelu", "roberta-ViT-B-32",
                      "xlm-roberta-base-ViT-B-32", "xlm-roberta-large-ViT-H-14"),
    [](const ::testing::TestParamInfo<std::string>& info) {
      return TestNameFrom(info.param);
    });

TEST(ConfigTest, SlashSpellingIsAccepted) {
  auto config = ResolveModelConfig("ViT-B/32");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name, "ViT-B-32");
}

TEST(ConfigTest, UnknownModelIsNotFound) {
  auto config = ResolveModelConfig("ViT-Z-99");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(config.status().message().find("ViT-B-32"), std::string::npos);
}

TEST(ConfigTest, MissingJsonFileIsNotFound) {
  EXPECT_EQ(ResolveModelConfig("/nonexistent/model.json").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ConfigTest, HfFixtureCarriesItsEncoderConfig) {
  auto config = ResolveModelConfig(ReferencePath("hf/tiny-xlm-roberta-vit.json"));
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->text.hf.has_value());
  EXPECT_EQ(config->text.hf->model_type, "xlm-roberta");
  EXPECT_EQ(config->text.hf->hidden_size, 96);
  EXPECT_EQ(config->text.hf->vocab_size, 340);
  EXPECT_TRUE(config->custom_text());
}

TEST(ConfigTest, RejectsUnsupportedOrMalformedConfigs) {
  const char* bad[] = {
      "[]",
      "{\"embed_dim\": 512}",
      R"({"embed_dim": 512, "vision_cfg": {"timm_model_name": "vit"}, "text_cfg": {}})",
      R"({"embed_dim": 512, "vision_cfg": {"ls_init_value": 0.1}, "text_cfg": {}})",
      R"({"embed_dim": 512, "vision_cfg": {"width": -1}, "text_cfg": {}})",
      R"({"embed_dim": 512, "vision_cfg": {"image_size": 225, "patch_size": 16}, "text_cfg": {}})",
      R"({"embed_dim": 512, "vision_cfg": {}, "text_cfg": {"width": 100, "heads": 8}})",
      R"({"embed_dim": 512, "vision_cfg": {}, "text_cfg": {"hf_model_name": "bert-base"}})",
      R"({"embed_dim": 512, "vision_cfg": {}, "text_cfg": {}, "multimodal_cfg": {"width": 1}})",
      R"({"embed_dim": 512, "quick_gelu": "yes", "vision_cfg": {}, "text_cfg": {}})",
  };
  for (const char* json : bad) {
    auto config = ParseModelConfig(json, "bad");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << json;
  }
}

TEST(ConfigTest, DefaultsFollowOpenClip) {
  auto config = ParseModelConfig(R"({"embed_dim": 512, "vision_cfg": {}, "text_cfg": {}})", "d");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vision.width, 768);
  EXPECT_EQ(config->vision.layers, 12);
  EXPECT_EQ(config->vision.patch_size, 16);
  EXPECT_EQ(config->vision.image_size, 224);
  EXPECT_EQ(config->text.context_length, 77);
  EXPECT_EQ(config->text.vocab_size, 49408);
  EXPECT_FALSE(config->quick_gelu);
}

}  // namespace
}  // namespace oclip::testing
