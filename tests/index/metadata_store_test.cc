#include "index/metadata_store.h"

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/index/test_data.h"

namespace oclip {
namespace index {
namespace {

MetadataStoreOptions ReadOnly() {
  MetadataStoreOptions options;
  options.read_only = true;
  return options;
}

std::vector<MetadataRecord> SampleRecords() {
  return {
      {0, "000000000", "a photo of a cat", "https://example.com/cat.jpg", 0, 0,
       R"({"width":640,"height":480})"},
      {1, "000000001", "Ein Hund im Schnee — 雪の中の犬 🐕", "https://example.com/犬.png", 0, 1,
       R"({"lang":"de"})"},
      {7, "000000007", "", "", 2, 5, ""},
      {1234567890123, "k", "quote ' and \" and ; DROP TABLE metadata; --", "u", 9, 99, "{}"},
  };
}

TEST(MetadataStoreTest, RoundTripOnARealFileIncludingUnicode) {
  const std::string path = MakeTempDir("meta") + "/metadata.sqlite";
  {
    auto store = MetadataStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Insert(SampleRecords()).ok());
  }
  ASSERT_TRUE(std::filesystem::exists(path));

  auto store = MetadataStore::Open(path, ReadOnly());
  ASSERT_TRUE(store.ok()) << store.status();
  auto count = (*store)->Count();
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, static_cast<int64_t>(SampleRecords().size()));

  const std::vector<MetadataRecord> records = SampleRecords();
  const std::vector<int64_t> ids = {7, 42, 1, -1, 0, 1234567890123, 1};
  auto found = (*store)->Lookup(ids);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    std::optional<MetadataRecord> expected;
    for (const auto& r : records) {
      if (r.id == ids[i]) expected = r;
    }
    EXPECT_EQ((*found)[i].has_value(), expected.has_value()) << ids[i];
    if (expected.has_value() && (*found)[i].has_value()) {
      EXPECT_EQ(*(*found)[i], *expected) << ids[i];
    }
  }
}

TEST(MetadataStoreTest, DuplicateIdRollsBackTheWholeInsert) {
  const std::string path = MakeTempDir("dup") + "/metadata.sqlite";
  auto store = MetadataStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Insert(SampleRecords()).ok());
  std::vector<MetadataRecord> batch = {{100, "new", "", "", 0, 0, ""}, SampleRecords()[0]};
  const absl::Status status = (*store)->Insert(batch);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  EXPECT_NE(status.message().find("UNIQUE"), std::string::npos) << status;  // SQLite's words
  auto found = (*store)->Lookup(std::vector<int64_t>{100});
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE((*found)[0].has_value());
  EXPECT_EQ(*(*store)->Count(), static_cast<int64_t>(SampleRecords().size()));
}

TEST(MetadataStoreTest, UsesWalJournal) {
  const std::string path = MakeTempDir("wal") + "/metadata.sqlite";
  auto store = MetadataStore::Open(path);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Insert(SampleRecords()).ok());
  EXPECT_TRUE(std::filesystem::exists(path + "-wal"));
}

TEST(MetadataStoreTest, OpenErrors) {
  const std::string dir = MakeTempDir("errors");
  EXPECT_EQ(MetadataStore::Open(dir + "/missing.sqlite", ReadOnly()).status().code(),
            absl::StatusCode::kNotFound);
  std::ofstream(dir + "/junk.sqlite") << std::string(4096, 'x');
  const auto junk = MetadataStore::Open(dir + "/junk.sqlite");
  EXPECT_EQ(junk.status().code(), absl::StatusCode::kDataLoss) << junk.status();
}

}  // namespace
}  // namespace index
}  // namespace oclip
