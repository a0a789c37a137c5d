// Shared by the per-family parity tests: build a tiny reference model from its
// JSON config and weights, and compare its features with Python OpenCLIP's.

#ifndef OCLIP_TESTS_MODEL_PARITY_H_
#define OCLIP_TESTS_MODEL_PARITY_H_

#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/checkpoint/checkpoint.h"
#include "model/clip_model.h"
#include "model/config.h"
#include "tests/model/reference.h"

namespace oclip::testing {

// Relative tolerance of the parity gate: float32 rounding, not approximation.
inline constexpr double kParityTolerance = 1e-4;

// `name` is the fixture path without extension, e.g. "tiny-vit" or
// "hf/tiny-roberta-vit"; weights from `weights` (default NAME.safetensors).
inline std::shared_ptr<ClipModel> LoadFixtureModel(const std::string& name,
                                                   const std::string& weights = "") {
  auto config = ResolveModelConfig(ReferencePath(name + ".json"));
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return nullptr;
  auto model = ClipModel::Create(*config);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  const std::string path = ReferencePath(weights.empty() ? name + ".safetensors" : weights);
  absl::Status loaded = LoadCheckpoint(**model, path);
  EXPECT_TRUE(loaded.ok()) << loaded;
  if (!loaded.ok()) return nullptr;
  (*model)->eval();
  return *model;
}

// The tokens the reference text features were computed from: the CLIP
// tokenizer's for native towers, the HF tokenizer's (stored with the
// expectations) for HF towers.
inline torch::Tensor FixtureTokens(const std::string& name) {
  if (name.rfind("hf/", 0) == 0) return LoadReferenceTensor(name + ".expected.safetensors", "tokens");
  return LoadReferenceTensor("tokens.safetensors", "tokens");
}

// Encodes the fixture's stored images / tokens and checks the features
// against the reference within kParityTolerance.
inline void ExpectImageFeaturesMatchReference(ClipModel& model, const std::string& name) {
  torch::InferenceMode inference;
  const std::string expected = name + ".expected.safetensors";
  auto features = model.EncodeImage(LoadReferenceTensor(expected, "images"));
  ASSERT_TRUE(features.ok()) << features.status();
  const double error = RelativeError(*features, LoadReferenceTensor(expected, "image_features"));
  EXPECT_LT(error, kParityTolerance) << name << " image_features";
  std::cout << "[ parity   ] " << name << " image_features: relative error " << error << "\n";
}

inline void ExpectTextFeaturesMatchReference(ClipModel& model, const std::string& name) {
  torch::InferenceMode inference;
  auto features = model.EncodeText(FixtureTokens(name));
  ASSERT_TRUE(features.ok()) << features.status();
  const double error = RelativeError(
      *features, LoadReferenceTensor(name + ".expected.safetensors", "text_features"));
  EXPECT_LT(error, kParityTolerance) << name << " text_features";
  std::cout << "[ parity   ] " << name << " text_features: relative error " << error << "\n";
}

// The fixture texts whose token count (`lengths`, one per text) is under half
// the context, encoded as one batch, against the reference rows within
// kParityTolerance. Text towers compute only up to a batch's longest text, and
// the fixture's full batch holds one that fills the context.
inline void ExpectShortTextsMatchReference(ClipModel& model, const std::string& name,
                                           const torch::Tensor& lengths) {
  torch::InferenceMode inference;
  const torch::Tensor tokens = FixtureTokens(name);
  const torch::Tensor rows = torch::nonzero(lengths < tokens.size(1) / 2).flatten();
  ASSERT_GE(rows.size(0), 10);
  ASSERT_LT(rows.size(0), tokens.size(0));
  auto features = model.EncodeText(tokens.index_select(0, rows));
  ASSERT_TRUE(features.ok()) << features.status();
  const torch::Tensor expected =
      LoadReferenceTensor(name + ".expected.safetensors", "text_features").index_select(0, rows);
  EXPECT_LT(RelativeError(*features, expected), kParityTolerance) << name;
}

inline void ExpectFeaturesMatchReference(ClipModel& model, const std::string& name) {
  ExpectImageFeaturesMatchReference(model, name);
  ExpectTextFeaturesMatchReference(model, name);
}

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_MODEL_PARITY_H_
