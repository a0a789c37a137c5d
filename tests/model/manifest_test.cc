// Every model of the release list, built from oclip's own registry, has
// exactly the state-dict keys, shapes and parameter count of OpenCLIP's model
// (../shared/reference/manifest.json and hf/manifest.json), so the released
// checkpoints load strictly. Built on the meta device: no 5 GB allocations.

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/clip_model.h"
#include "model/config.h"
#include "tests/model/reference.h"

namespace oclip::testing {
namespace {

using Json = nlohmann::json;

struct ManifestEntry {
  std::string name;
  std::string file;  // manifest.json or hf/manifest.json
};

void PrintTo(const ManifestEntry& entry, std::ostream* os) { *os << entry.name; }

Json ReadManifest(const std::string& file) {
  std::ifstream in(ReferencePath(file));
  return Json::parse(in);
}

std::vector<ManifestEntry> RealSizeEntries() {
  std::vector<ManifestEntry> entries;
  for (const char* file : {"manifest.json", "hf/manifest.json"}) {
    std::ifstream in(ReferencePath(file));
    if (!in) continue;  // Reported by ManifestsListTwentyRealModels.
    const Json manifest = Json::parse(in);
    for (const auto& [name, entry] : manifest.items()) {
      if (name.rfind("tiny-", 0) != 0) entries.push_back({name, file});
    }
  }
  return entries;
}

TEST(ManifestTest, ManifestsListTwentyRealModels) {
  EXPECT_EQ(RealSizeEntries().size(), 20u);
}

class ManifestTest : public ::testing::TestWithParam<ManifestEntry> {};

TEST_P(ManifestTest, RegistryModelHasOpenClipKeysShapesAndParameterCount) {
  const ManifestEntry& entry = GetParam();
  const Json expected = ReadManifest(entry.file)[entry.name];
  auto config = GetBuiltinModelConfig(entry.name);
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = ClipModel::Create(*config, torch::TensorOptions().device(torch::kMeta));
  ASSERT_TRUE(model.ok()) << model.status();

  std::map<std::string, std::vector<int64_t>> actual;
  for (const auto& p : (*model)->named_parameters()) actual[p.key()] = p.value().sizes().vec();
  for (const auto& b : (*model)->named_buffers()) actual[b.key()] = b.value().sizes().vec();

  std::set<std::string> expected_keys;
  for (const auto& [key, shape] : expected["state_dict"].items()) {
    expected_keys.insert(key);
    auto it = actual.find(key);
    if (it == actual.end()) {
      ADD_FAILURE() << entry.name << ": missing " << key;
      continue;
    }
    EXPECT_EQ(it->second, shape.get<std::vector<int64_t>>()) << entry.name << ": " << key;
  }
  for (const auto& [key, shape] : actual) {
    EXPECT_TRUE(expected_keys.count(key)) << entry.name << ": unexpected " << key;
  }
  EXPECT_EQ((*model)->NumParameters(), expected["params"].get<int64_t>()) << entry.name;
}

INSTANTIATE_TEST_SUITE_P(ReleasedModels, ManifestTest, ::testing::ValuesIn(RealSizeEntries()),
                         [](const ::testing::TestParamInfo<ManifestEntry>& info) {
                           return TestNameFrom(info.param.name);
                         });

TEST(ManifestTest, TinyFixtureConfigsMatchTheirManifestEntries) {
  const Json manifest = ReadManifest("manifest.json");
  for (const char* name : {"tiny-vit", "tiny-vit-quickgelu", "tiny-vit-h", "tiny-rn"}) {
    auto config = ResolveModelConfig(ReferencePath(std::string(name) + ".json"));
    ASSERT_TRUE(config.ok()) << config.status();
    auto model = ClipModel::Create(*config, torch::TensorOptions().device(torch::kMeta));
    ASSERT_TRUE(model.ok());
    EXPECT_EQ((*model)->NumParameters(), manifest[name]["params"].get<int64_t>()) << name;
    size_t keys = (*model)->named_parameters().size() + (*model)->named_buffers().size();
    EXPECT_EQ(keys, manifest[name]["state_dict"].size()) << name;
  }
}

}  // namespace
}  // namespace oclip::testing
