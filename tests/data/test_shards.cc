#include "tests/data/test_shards.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/core/run_command.h"
#include "tests/core/scratch_dir.h"

namespace oclip::testing {

void WriteTar(const std::string& path, const std::vector<TarMember>& members,
              TarCompression compression) {
  archive* a = archive_write_new();
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
  if (compression == TarCompression::kGzip) {
    ASSERT_EQ(archive_write_add_filter_gzip(a), ARCHIVE_OK);
  }
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK) << archive_error_string(a);
  for (const TarMember& member : members) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, member.name.c_str());
    archive_entry_set_filetype(entry, member.directory ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(entry, member.directory ? 0755 : 0644);
    archive_entry_set_size(entry,
                           member.directory ? 0 : static_cast<la_int64_t>(member.data.size()));
    archive_entry_set_mtime(entry, 1700000000, 0);
    ASSERT_EQ(archive_write_header(a, entry), ARCHIVE_OK) << archive_error_string(a);
    if (!member.directory && !member.data.empty()) {
      ASSERT_EQ(archive_write_data(a, member.data.data(), member.data.size()),
                static_cast<la_ssize_t>(member.data.size()));
    }
    archive_entry_free(entry);
  }
  ASSERT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
}

std::vector<std::string> FixtureImageNames() {
  std::vector<std::string> names;
  DIR* dir = opendir(ReferencePath("images").c_str());
  EXPECT_NE(dir, nullptr) << "no fixture images at " << ReferencePath("images");
  if (dir == nullptr) return names;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

std::string FixtureImagePath(const std::string& name) { return ReferencePath("images/" + name); }

std::vector<ExpectedSample> FixtureSamples(const std::string& prefix,
                                           std::vector<TarMember>* members) {
  std::vector<ExpectedSample> expected;
  int i = 0;
  for (const std::string& name : FixtureImageNames()) {
    ExpectedSample sample;
    sample.key = absl::StrFormat("%s%06d", prefix, i);
    sample.image_extension = name.substr(name.rfind('.') + 1);
    sample.image = ReadFileOrEmpty(FixtureImagePath(name));
    EXPECT_FALSE(sample.image.empty()) << name;
    sample.caption = absl::StrCat("a picture called \"", name, "\", number ", i);
    sample.metadata_json =
        absl::StrCat("{\"key\": \"", sample.key, "\", \"source\": \"", name, "\"}");
    members->push_back({sample.key + "." + sample.image_extension, sample.image});
    members->push_back({sample.key + ".txt", sample.caption});
    members->push_back({sample.key + ".json", sample.metadata_json});
    expected.push_back(std::move(sample));
    ++i;
  }
  return expected;
}

std::string WriteFixtureShard(const std::string& name, std::vector<ExpectedSample>* expected,
                              TarCompression compression) {
  std::vector<TarMember> members;
  *expected = FixtureSamples("", &members);
  const std::string path = ScratchPath(name);
  WriteTar(path, members, compression);
  return path;
}

std::vector<std::pair<std::string, int64_t>> MemberHeaderOffsets(const std::string& path) {
  std::vector<std::pair<std::string, int64_t>> offsets;
  archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_filename(a, path.c_str(), 10240), ARCHIVE_OK);
  archive_entry* entry;
  while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
    offsets.emplace_back(archive_entry_pathname(entry), archive_read_header_position(a));
  }
  archive_read_free(a);
  return offsets;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<Sample> ReadAll(SampleSource& source) {
  std::vector<Sample> samples;
  Sample sample;
  while (true) {
    absl::StatusOr<bool> more = source.Next(&sample);
    EXPECT_TRUE(more.ok()) << more.status();
    if (!more.ok() || !*more) break;
    samples.push_back(sample);
  }
  return samples;
}

}  // namespace oclip::testing
