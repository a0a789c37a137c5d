// Loading the same weights from each checkpoint format people download, and
// rejecting truncated, corrupted and wrong-model files with a clear error.

#include "tests/core/scratch_dir.h"
#include "model/checkpoint/checkpoint.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "tests/model/parity.h"

namespace oclip::testing {
namespace {

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = ScratchPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

struct Features {
  torch::Tensor image;
  torch::Tensor text;
};

Features Encode(ClipModel& model, const std::string& fixture) {
  torch::InferenceMode inference;
  auto image = model.EncodeImage(LoadReferenceTensor(fixture + ".expected.safetensors", "images"));
  auto text = model.EncodeText(FixtureTokens(fixture));
  EXPECT_TRUE(image.ok() && text.ok());
  return {image.ok() ? *image : torch::Tensor(), text.ok() ? *text : torch::Tensor()};
}

// --- The four formats --------------------------------------------------------------

struct FormatCase {
  const char* fixture;  // config + reference outputs
  const char* file;
  CheckpointFormat format;
};

void PrintTo(const FormatCase& c, std::ostream* os) { *os << c.file; }

class CheckpointFormatTest : public ::testing::TestWithParam<FormatCase> {};

TEST_P(CheckpointFormatTest, IsRecognizedByItsBytes) {
  auto checkpoint = ReadCheckpoint(ReferencePath(GetParam().file));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->format, GetParam().format);
}

TEST_P(CheckpointFormatTest, GivesTheSameOutputsAsSafetensors) {
  auto from_safetensors = LoadFixtureModel(GetParam().fixture);
  auto from_file = LoadFixtureModel(GetParam().fixture, GetParam().file);
  ASSERT_NE(from_safetensors, nullptr);
  ASSERT_NE(from_file, nullptr);
  Features a = Encode(*from_safetensors, GetParam().fixture);
  Features b = Encode(*from_file, GetParam().fixture);
  EXPECT_TRUE(torch::equal(a.image, b.image));
  EXPECT_TRUE(torch::equal(a.text, b.text));
  ExpectFeaturesMatchReference(*from_file, GetParam().fixture);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, CheckpointFormatTest,
    ::testing::Values(
        FormatCase{"tiny-vit", "tiny-vit.safetensors", CheckpointFormat::kSafetensors},
        FormatCase{"tiny-vit", "tiny-vit.bin", CheckpointFormat::kTorchSave},
        FormatCase{"tiny-vit", "tiny-vit.epoch_7.pt", CheckpointFormat::kTorchSave},
        FormatCase{"tiny-vit-quickgelu", "tiny-vit-quickgelu.torchscript.pt",
                   CheckpointFormat::kTorchScript}),
    [](const ::testing::TestParamInfo<FormatCase>& info) {
      return TestNameFrom(info.param.file);
    });

TEST(CheckpointTest, TrainingCheckpointKeysLoseTheirModulePrefix) {
  auto checkpoint = ReadCheckpoint(ReferencePath("tiny-vit.epoch_7.pt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_FALSE(checkpoint->state_dict.empty());
  EXPECT_EQ(checkpoint->state_dict.begin()->first.rfind("module.", 0), 0u);
  auto model = LoadFixtureModel("tiny-vit", "tiny-vit.epoch_7.pt");
  EXPECT_NE(model, nullptr);
}

// --- Bad files -------------------------------------------------------------------------

class TruncatedCheckpointTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TruncatedCheckpointTest, IsRejectedWithAClearError) {
  const std::string bytes = ReadBytes(ReferencePath(GetParam()));
  ASSERT_GT(bytes.size(), 1000u);
  auto config = ResolveModelConfig(ReferencePath(
      std::string(GetParam()).find("quickgelu") != std::string::npos ? "tiny-vit-quickgelu.json"
                                                                     : "tiny-vit.json"));
  ASSERT_TRUE(config.ok());
  for (double fraction : {0.0, 0.001, 0.3, 0.75, 0.999}) {
    const size_t keep = static_cast<size_t>(bytes.size() * fraction);
    const std::string path = WriteTemp("truncated_" + std::to_string(keep), bytes.substr(0, keep));
    auto model = ClipModel::Create(*config);
    ASSERT_TRUE(model.ok());
    absl::Status status = LoadCheckpoint(**model, path);
    EXPECT_FALSE(status.ok()) << GetParam() << " cut at " << keep;
    EXPECT_TRUE(status.code() == absl::StatusCode::kDataLoss ||
                status.code() == absl::StatusCode::kInvalidArgument)
        << status;
    EXPECT_NE(status.message().find(path), std::string::npos) << status;
    std::remove(path.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, TruncatedCheckpointTest,
                         ::testing::Values("tiny-vit.safetensors", "tiny-vit.bin",
                                           "tiny-vit.epoch_7.pt",
                                           "tiny-vit-quickgelu.torchscript.pt"));

TEST(CheckpointTest, CorruptedSafetensorsHeaderIsDataLoss) {
  std::string bytes = ReadBytes(ReferencePath("tiny-vit.safetensors"));
  bytes[20] = '\xff';  // Inside the JSON header.
  const std::string path = WriteTemp("corrupt_header.safetensors", bytes);
  auto checkpoint = ReadCheckpoint(path);
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kDataLoss) << checkpoint.status();
}

TEST(CheckpointTest, GarbageAndMissingFilesAreRejected) {
  EXPECT_EQ(ReadCheckpoint(WriteTemp("garbage.bin", std::string(4096, 'x'))).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadCheckpoint(WriteTemp("empty.bin", "")).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadCheckpoint("/nonexistent/model.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(CheckpointTest, WrongModelNamesTheKeysAndLeavesTheModelUnchanged) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  Features before = Encode(*model, "tiny-vit");
  const std::string path = ReferencePath("tiny-rn.safetensors");
  absl::Status status = LoadCheckpoint(*model, path);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find(path), std::string::npos) << status;
  EXPECT_NE(status.message().find("missing keys"), std::string::npos) << status;
  EXPECT_NE(status.message().find("unexpected keys ("), std::string::npos) << status;
  EXPECT_NE(status.message().find("visual.attnpool"), std::string::npos) << status;
  Features after = Encode(*model, "tiny-vit");
  EXPECT_TRUE(torch::equal(before.image, after.image));
  EXPECT_TRUE(torch::equal(before.text, after.text));
}

TEST(CheckpointTest, MisShapedKeysAreNamedWithBothShapes) {
  // tiny-vit-h's text tower is 96 wide; tiny-vit's is 64.
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  absl::Status status = LoadCheckpoint(*model, ReferencePath("tiny-vit-h.safetensors"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("ln_final.weight [96] vs model [64]"), std::string::npos)
      << status;
}

// Writes `state_dict` as safetensors (float32/int64 tensors only).
std::string WriteStateDict(const std::string& name, const StateDict& state_dict) {
  std::vector<TensorToWrite> tensors;
  std::vector<torch::Tensor> keep_alive;
  for (const auto& [key, tensor] : state_dict) {
    torch::Tensor t = tensor.contiguous();
    keep_alive.push_back(t);
    tensors.push_back({key, t.scalar_type() == torch::kLong ? DType::kI64 : DType::kF32,
                       t.sizes().vec(),
                       absl::MakeConstSpan(static_cast<const uint8_t*>(t.data_ptr()),
                                           t.numel() * t.element_size())});
  }
  const std::string path = ScratchPath(name);
  EXPECT_TRUE(WriteSafetensors(path, tensors).ok());
  return path;
}

TEST(CheckpointTest, IgnoresPositionIdsThatOlderTransformersSaved) {
  auto checkpoint = ReadCheckpoint(ReferencePath("hf/tiny-roberta-vit.safetensors"));
  ASSERT_TRUE(checkpoint.ok());
  StateDict state_dict = checkpoint->state_dict;
  state_dict["text.transformer.embeddings.position_ids"] =
      torch::arange(80, torch::kLong).unsqueeze(0);
  const std::string path = WriteStateDict("with_position_ids.safetensors", state_dict);
  auto model = LoadFixtureModel("hf/tiny-roberta-vit", "");
  ASSERT_NE(model, nullptr);
  ASSERT_TRUE(LoadCheckpoint(*model, path).ok());
  ExpectFeaturesMatchReference(*model, "hf/tiny-roberta-vit");
}

TEST(CheckpointTest, ResizesTheImagePositionalEmbeddingToTheModelGrid) {
  auto config = ResolveModelConfig(ReferencePath("tiny-vit.json"));
  ASSERT_TRUE(config.ok());
  config->vision.image_size = 96;  // Grid 6x6 instead of 4x4.
  auto model = ClipModel::Create(*config);
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE(LoadCheckpoint(**model, ReferencePath("tiny-vit.safetensors")).ok());
  torch::Tensor original = LoadReferenceTensor("tiny-vit.safetensors", "visual.positional_embedding");
  // A copy: named_parameters() returns a temporary dict.
  const torch::Tensor resized = *(*model)->named_parameters().find("visual.positional_embedding");
  ASSERT_EQ(resized.sizes(), (std::vector<int64_t>{37, 128}));
  EXPECT_TRUE(torch::equal(resized[0], original[0])) << "the class token is kept as is";
  // A constant grid stays constant under any interpolation.
  StateDict constant = ReadCheckpoint(ReferencePath("tiny-vit.safetensors"))->state_dict;
  constant["visual.positional_embedding"] = torch::full({17, 128}, 0.25);
  ASSERT_TRUE(LoadStateDict(**model, constant, "constant").ok());
  EXPECT_TRUE(torch::allclose(
      (*model)->named_parameters().find("visual.positional_embedding")->slice(0, 1),
      torch::full({36, 128}, 0.25), 1e-6, 1e-6));
}

// --- Architecture inference (OpenAI TorchScript checkpoints) ----------------------

StateDict MetaStateDict(const nlohmann::json& shapes) {
  StateDict state_dict;
  for (const auto& [key, shape] : shapes.items()) {
    state_dict[key] = torch::empty(shape.get<std::vector<int64_t>>(),
                                   torch::TensorOptions().device(torch::kMeta));
  }
  return state_dict;
}

TEST(InferConfigTest, RecoversOpenAiArchitecturesFromShapes) {
  std::ifstream in(ReferencePath("manifest.json"));
  const nlohmann::json manifest = nlohmann::json::parse(in);
  for (const char* name : {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32",
                           "ViT-B-16", "ViT-L-14", "ViT-L-14-336"}) {
    auto inferred = InferConfigFromStateDict(MetaStateDict(manifest[name]["state_dict"]));
    ASSERT_TRUE(inferred.ok()) << name << ": " << inferred.status();
    auto builtin = GetBuiltinModelConfig(name);
    ASSERT_TRUE(builtin.ok());
    EXPECT_EQ(inferred->embed_dim, builtin->embed_dim) << name;
    EXPECT_EQ(inferred->vision.resnet_layers, builtin->vision.resnet_layers) << name;
    EXPECT_EQ(inferred->vision.width, builtin->vision.width) << name;
    EXPECT_EQ(inferred->vision.image_size, builtin->vision.image_size) << name;
    EXPECT_EQ(inferred->vision.heads(), builtin->vision.heads()) << name;
    EXPECT_EQ(inferred->vision.mlp_width(), builtin->vision.mlp_width()) << name;
    if (!builtin->vision.is_resnet()) {
      EXPECT_EQ(inferred->vision.layers, builtin->vision.layers) << name;
      EXPECT_EQ(inferred->vision.patch_size, builtin->vision.patch_size) << name;
    }
    EXPECT_EQ(inferred->text.width, builtin->text.width) << name;
    EXPECT_EQ(inferred->text.heads, builtin->text.heads) << name;
    EXPECT_EQ(inferred->text.layers, builtin->text.layers) << name;
    EXPECT_EQ(inferred->text.context_length, builtin->text.context_length) << name;
    EXPECT_EQ(inferred->text.vocab_size, builtin->text.vocab_size) << name;
    EXPECT_TRUE(inferred->quick_gelu) << name;
  }
}

TEST(InferConfigTest, InferredTorchScriptModelLoadsStrictly) {
  auto checkpoint = ReadCheckpoint(ReferencePath("tiny-vit-quickgelu.torchscript.pt"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto config = InferConfigFromStateDict(checkpoint->state_dict);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vision.patch_size, 16);
  EXPECT_EQ(config->vision.image_size, 64);
  EXPECT_EQ(config->vision.layers, 2);
  auto model = ClipModel::Create(*config);
  ASSERT_TRUE(model.ok());
  EXPECT_TRUE(LoadStateDict(**model, checkpoint->state_dict, "torchscript").ok());
}

TEST(InferConfigTest, RejectsNonClipStateDicts) {
  StateDict state_dict;
  state_dict["foo.weight"] = torch::zeros({2, 2});
  EXPECT_EQ(InferConfigFromStateDict(state_dict).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace oclip::testing
