#include "core/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"

namespace oclip {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8},  {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},  {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

const DTypeInfo* FindDType(const std::string& name) {
  for (const auto& info : kDTypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

// Headers of real checkpoints are well under a megabyte; a larger claim means
// a corrupted length field, not a bigger model.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

}  // namespace

size_t DTypeSize(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info.size;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info.name;
  }
  return "?";
}

int64_t TensorView::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  std::unique_ptr<SafetensorsReader> reader(new SafetensorsReader(std::move(file)));
  OCLIP_RETURN_IF_ERROR(reader->ParseHeader());
  return reader;
}

absl::Status SafetensorsReader::ParseHeader() {
  const std::string& path = file_->path();
  auto corrupt = [&path](const std::string& why) {
    return absl::DataLossError(
        absl::StrCat(path, " is not a valid safetensors file: ", why));
  };
  const size_t file_size = file_->size();
  if (file_size < 8) return corrupt("shorter than the 8-byte header length");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file_->data(), 8);  // Little-endian hosts only.
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return corrupt(absl::StrCat("header length ", header_len,
                                " exceeds the file size ", file_size));
  }
  const char* header_begin = reinterpret_cast<const char*>(file_->data() + 8);
  nlohmann::json header = nlohmann::json::parse(
      header_begin, header_begin + header_len, /*cb=*/nullptr,
      /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return corrupt("the header is not a JSON object");
  }
  const uint8_t* data_begin = file_->data() + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return corrupt("__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return corrupt(absl::StrCat("metadata value of ", key, " is not a string"));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") ||
        !entry.contains("shape") || !entry.contains("data_offsets") ||
        !entry["dtype"].is_string() || !entry["shape"].is_array() ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return corrupt(absl::StrCat("entry ", name, " lacks dtype/shape/data_offsets"));
    }
    const DTypeInfo* info = FindDType(entry["dtype"].get<std::string>());
    if (info == nullptr) {
      return corrupt(absl::StrCat("entry ", name, " has unknown dtype ",
                                  entry["dtype"].get<std::string>()));
    }
    TensorView view;
    view.dtype = info->dtype;
    uint64_t elements = 1;
    for (const auto& dim : entry["shape"]) {
      if (!dim.is_number_unsigned()) {
        return corrupt(absl::StrCat("entry ", name, " has a negative or non-integer dimension"));
      }
      uint64_t d = dim.get<uint64_t>();
      // Each dimension must fit the int64_t shapes hand out (after a 0 the
      // element count alone would not catch a huge one).
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (d != 0 && elements > std::numeric_limits<uint64_t>::max() / 16 / d)) {
        return corrupt(absl::StrCat("entry ", name, " has an absurd shape"));
      }
      elements *= d;
      view.shape.push_back(static_cast<int64_t>(d));
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return corrupt(absl::StrCat("entry ", name, " has invalid data_offsets"));
    }
    uint64_t begin = offsets[0].get<uint64_t>();
    uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return corrupt(absl::StrCat("entry ", name, " spans bytes [", begin, ", ",
                                  end, ") beyond the ", data_size,
                                  "-byte data section (truncated file?)"));
    }
    if (end - begin != elements * info->size) {
      return corrupt(absl::StrCat("entry ", name, " has ", end - begin,
                                  " bytes but its shape needs ",
                                  elements * info->size));
    }
    view.data = data_begin + begin;
    view.size_bytes = end - begin;
    tensors_.emplace(name, std::move(view));
    if (begin != end) ranges.emplace_back(begin, end);
    order.emplace_back(begin, name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return corrupt("tensor data ranges overlap");
    }
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  names_.reserve(order.size());
  for (auto& [offset, name] : order) names_.push_back(std::move(name));
  return absl::OkStatus();
}

absl::StatusOr<TensorView> SafetensorsReader::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("no tensor ", name, " in ", path()));
  }
  return it->second;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t elements = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat(t.name, ": negative dimension"));
      elements *= static_cast<uint64_t>(d);
    }
    if (elements * DTypeSize(t.dtype) != t.data.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(t.name, ": ", t.data.size(), " bytes for shape [",
                       absl::StrJoin(t.shape, ","), "] of ", DTypeName(t.dtype)));
    }
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string header_text = header.dump();
  // Pad the header with spaces so that the data section is 8-byte aligned.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_len = header_text.size();

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  bool ok = std::fwrite(&header_len, 8, 1, f) == 1 &&
            std::fwrite(header_text.data(), 1, header_len, f) == header_len;
  for (const auto& t : tensors) {
    if (!ok) break;
    ok = t.data.empty() || std::fwrite(t.data.data(), 1, t.data.size(), f) == t.data.size();
  }
  ok = (std::fflush(f) == 0) && ok;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace oclip
