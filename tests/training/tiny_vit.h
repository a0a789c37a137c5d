// The tiny ViT fixture (shared/reference/tiny-vit.*) in train mode, as the
// one-step parity and the distributed tests start from it (test-only).

#ifndef OCLIP_TESTS_TRAINING_TINY_VIT_H_
#define OCLIP_TESTS_TRAINING_TINY_VIT_H_

#include <memory>

#include <gtest/gtest.h>

#include "model/model_loader.h"
#include "tests/model/reference.h"

namespace oclip::testing {

// Null (and a test failure) if the fixture cannot be loaded.
inline std::shared_ptr<ClipModel> LoadTinyVitForTraining() {
  LoadModelOptions options;
  options.model = ReferencePath("tiny-vit.json");
  options.pretrained = ReferencePath("tiny-vit.safetensors");
  auto model = LoadModel(options);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return nullptr;
  (*model)->train();
  return *model;
}

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_TRAINING_TINY_VIT_H_
