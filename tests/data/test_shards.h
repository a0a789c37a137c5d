// Test-only helpers for data/: tar shards written at test time with
// libarchive's writer from the reference fixture images, and a way to drain a
// SampleSource.

#ifndef OCLIP_TESTS_DATA_TEST_SHARDS_H_
#define OCLIP_TESTS_DATA_TEST_SHARDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "data/sample_source.h"

namespace oclip::testing {

struct TarMember {
  std::string name;
  std::string data;
  bool directory = false;
};

// What a test put into a shard, to compare against what a reader returns.
struct ExpectedSample {
  std::string key;
  std::string image_extension;
  std::string image;  // The fixture file's bytes.
  std::string caption;
  std::string metadata_json;
};

enum class TarCompression { kNone, kGzip };

// Writes `members` as a pax tar to `path`. Fails the current test on error.
void WriteTar(const std::string& path, const std::vector<TarMember>& members,
              TarCompression compression = TarCompression::kNone);

// The reference fixture images (../shared/reference/images), sorted by name.
std::vector<std::string> FixtureImageNames();
std::string FixtureImagePath(const std::string& name);

// One sample per fixture image: KEY.<ext> (the image), KEY.txt, KEY.json,
// keys "<prefix>000000", "<prefix>000001", ... Appends their members to
// `*members` and returns what a reader should give back.
std::vector<ExpectedSample> FixtureSamples(const std::string& prefix,
                                           std::vector<TarMember>* members);

// Writes a shard of FixtureSamples to scratch file `name`; returns its path.
std::string WriteFixtureShard(const std::string& name, std::vector<ExpectedSample>* expected,
                              TarCompression compression = TarCompression::kNone);

// Offsets of every member's header in an uncompressed tar, with the names.
std::vector<std::pair<std::string, int64_t>> MemberHeaderOffsets(const std::string& path);

// Writes `bytes` to `path` (fails the test on error).
void WriteFile(const std::string& path, const std::string& bytes);

// All remaining samples of `source` (fails the test if Next errors).
std::vector<Sample> ReadAll(SampleSource& source);

}  // namespace oclip::testing

#endif  // OCLIP_TESTS_DATA_TEST_SHARDS_H_
