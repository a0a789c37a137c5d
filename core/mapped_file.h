// A read-only memory mapping of a whole file.
//
// Checkpoints are gigabytes; mapping them lets the safetensors reader hand out
// views without reading the file into memory first. The mapping lives as long
// as the MappedFile; views into it must not outlive it. Thread-safe to read.

#ifndef OCLIP_CORE_MAPPED_FILE_H_
#define OCLIP_CORE_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace oclip {

class MappedFile {
 public:
  // NOT_FOUND if the file does not exist, INVALID_ARGUMENT if it is not a
  // regular file, INTERNAL if mapping fails. An empty file maps to size 0.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  absl::string_view view() const {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

// Reads a whole file into a string (for small files: configs, JSON).
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Creates or truncates `path` and writes `contents` (not atomically: for
// scratch and benchmark files; outputs that must never be seen half-written
// go through a temporary name and a rename).
absl::Status WriteStringToFile(const std::string& path, absl::string_view contents);

}  // namespace oclip

#endif  // OCLIP_CORE_MAPPED_FILE_H_
