#include "model/checkpoint/torch_archive.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/versions.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "core/status.h"

namespace oclip {
namespace {

using caffe2::serialize::PyTorchStreamReader;

constexpr char kZipMagic[] = {'P', 'K', '\x03', '\x04'};
constexpr size_t kMaxStorageKeyLength = 64;

absl::Status CheckOpenable(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  return absl::OkStatus();
}

// Runs `fn` (which may throw, as LibTorch does) and turns exceptions into
// DATA_LOSS, or RESOURCE_EXHAUSTED for a failed allocation.
template <typename Fn>
auto CatchLibTorch(const std::string& path, absl::string_view what, Fn&& fn)
    -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory ", what, " ", path));
  } catch (const c10::Error& e) {
    return absl::DataLossError(absl::StrCat("error ", what, " ", path, ": ",
                                            e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat("error ", what, " ", path, ": ", e.what()));
  }
}

// torch.jit.save archives also hold a data.pkl, of the scripted module.
bool IsTorchScript(PyTorchStreamReader& reader) {
  if (reader.hasRecord("constants.pkl")) return true;
  for (const std::string& name : reader.getAllRecords()) {
    if (absl::StartsWith(name, "code/")) return true;
  }
  return false;
}

bool IsValidStorageKey(const std::string& key) {
  if (key.empty() || key.size() > kMaxStorageKeyLength) return false;
  for (char c : key) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// CRC-32 as zip computes it (reflected polynomial 0xEDB88320), eight bytes
// per step ("slicing by 8", a few GB/s).
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

const CrcTables& GetCrcTables() {
  static const CrcTables* const tables = [] {
    auto* t = new CrcTables();
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      (*t)[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) {
        (*t)[s][i] = ((*t)[s - 1][i] >> 8) ^ (*t)[0][(*t)[s - 1][i] & 0xff];
      }
    }
    return t;
  }();
  return *tables;
}

uint32_t LoadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

uint64_t LoadLe(const uint8_t* p, int num_bytes) {
  uint64_t value = 0;
  for (int i = 0; i < num_bytes; ++i)
    value |= static_cast<uint64_t>(p[i]) << (8 * i);
  return value;
}

uint32_t Crc32(const uint8_t* p, size_t n) {
  const CrcTables& t = GetCrcTables();
  uint32_t crc = 0xFFFFFFFFu;
  for (; n >= 8; p += 8, n -= 8) {
    const uint32_t lo = crc ^ LoadLe32(p);
    const uint32_t hi = LoadLe32(p + 4);
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^
          t[4][lo >> 24] ^ t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^
          t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
  }
  for (; n > 0; ++p, --n) crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

// The CRC-32 of every record, from the zip central directory. LibTorch's
// miniz is built with MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS, so
// PyTorchStreamReader returns flipped bytes without complaint; torch.save
// writes the CRCs only there (its local headers defer them to a data
// descriptor).
class ZipChecksums {
 public:
  static absl::StatusOr<ZipChecksums> Read(const std::string& path);

  // DATA_LOSS unless `data` has the CRC-32 recorded for `record` (a name
  // inside the archive folder, as PyTorchStreamReader takes it).
  absl::Status Verify(const std::string& record, const void* data,
                      size_t size) const;

  // DATA_LOSS when PyTorchStreamReader's constructor would throw after
  // miniz has opened the archive: no entries, a first entry outside a
  // folder, no (readable) version record or an unsupported version. LibTorch
  // 1.13 leaks miniz's state on those throws (the constructor never reaches
  // mz_zip_reader_end), about 0.5 KB per malformed archive; checked here
  // first, a malformed archive costs an error, not memory.
  absl::Status CheckStreamReaderPreconditions() const;

  // DATA_LOSS when the directory's uncompressed size of `record` cannot be
  // right: more than a stored record's bytes in the file, or than deflate
  // can expand its compressed bytes to. PyTorchStreamReader::getRecord
  // allocates that size before reading, so a few-KB file could otherwise ask
  // for gigabytes. (Zip64 sizes are left to LibTorch.)
  absl::Status CheckRecordSize(const std::string& record) const;

  // Off: Verify() accepts any bytes (TorchArchiveOptions::verify_checksums).
  void set_verify_crcs(bool verify) { verify_crcs_ = verify; }

 private:
  struct Entry {
    uint32_t crc;
    uint16_t flags;           // general purpose bits: 1 encrypted, 0x20 patch, 0x40 strong
    uint32_t external_attributes;  // low byte: MS-DOS attributes, 0x10 a directory
    uint16_t method;          // 0: stored.
    uint64_t stored_size;     // 0xffffffff: in a zip64 extra field.
    uint64_t size;
    uint64_t local_offset;    // 0xffffffff: in a zip64 extra field.
  };

  absl::Status ParseCentralDirectory(const std::string& directory,
                                     uint64_t num_entries);

  absl::Status CheckEntrySize(const std::string& name, const Entry& entry) const;

  std::string path_;
  bool verify_crcs_ = true;
  uint64_t file_size_ = 0;
  std::string folder_;  // "<archive>/": the first entry's folder.
  std::unordered_map<std::string, Entry> entries_;
};

constexpr uint32_t kEndOfCentralDirSignature = 0x06054b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kCentralEntrySignature = 0x02014b50;
constexpr size_t kEndOfCentralDirSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EndSize = 56;
constexpr size_t kCentralEntrySize = 46;
constexpr size_t kMaxZipCommentSize = 0xffff;
// About a million records; checkpoints have thousands.
constexpr uint64_t kMaxCentralDirSize = uint64_t{256} << 20;

absl::StatusOr<std::string> ReadRange(std::ifstream& in,
                                      const std::string& path, uint64_t offset,
                                      uint64_t size) {
  std::string bytes(size, '\0');
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (!in || static_cast<uint64_t>(in.gcount()) != size) {
    return absl::DataLossError(
        absl::StrCat("cannot read ", size, " bytes at ", offset, " of ", path));
  }
  return bytes;
}

absl::StatusOr<ZipChecksums> ZipChecksums::Read(const std::string& path) {
  auto corrupt = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat(path, ": bad zip directory: ", what));
  };
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  if (file_size < kEndOfCentralDirSize) return corrupt("file too short");

  // The end-of-central-directory record ends the file, before a comment.
  const uint64_t tail_size =
      std::min<uint64_t>(file_size, kEndOfCentralDirSize + kMaxZipCommentSize);
  OCLIP_ASSIGN_OR_RETURN(std::string tail,
                         ReadRange(in, path, file_size - tail_size, tail_size));
  const auto* t = reinterpret_cast<const uint8_t*>(tail.data());
  size_t end = tail_size - kEndOfCentralDirSize + 1;
  do {
    --end;
  } while (end > 0 && LoadLe32(t + end) != kEndOfCentralDirSignature);
  if (LoadLe32(t + end) != kEndOfCentralDirSignature) {
    return corrupt("no end-of-central-directory record");
  }
  uint64_t num_entries = LoadLe(t + end + 10, 2);
  uint64_t dir_size = LoadLe(t + end + 12, 4);
  uint64_t dir_offset = LoadLe(t + end + 16, 4);

  // Zip64 (archives over 4 GiB): the real values are in a record that a
  // locator just before the end record points to.
  const uint64_t end_offset = file_size - tail_size + end;
  if (num_entries == 0xffff || dir_size == 0xffffffff ||
      dir_offset == 0xffffffff) {
    if (end_offset < kZip64LocatorSize) return corrupt("no zip64 locator");
    OCLIP_ASSIGN_OR_RETURN(
        std::string locator,
        ReadRange(in, path, end_offset - kZip64LocatorSize, kZip64LocatorSize));
    const auto* l = reinterpret_cast<const uint8_t*>(locator.data());
    if (LoadLe32(l) != kZip64LocatorSignature)
      return corrupt("no zip64 locator");
    const uint64_t zip64_end = LoadLe(l + 8, 8);
    if (zip64_end > file_size || file_size - zip64_end < kZip64EndSize) {
      return corrupt("zip64 record outside the file");
    }
    OCLIP_ASSIGN_OR_RETURN(std::string record,
                           ReadRange(in, path, zip64_end, kZip64EndSize));
    const auto* r = reinterpret_cast<const uint8_t*>(record.data());
    if (LoadLe32(r) != kZip64EndSignature) return corrupt("bad zip64 record");
    num_entries = LoadLe(r + 32, 8);
    dir_size = LoadLe(r + 40, 8);
    dir_offset = LoadLe(r + 48, 8);
  }
  if (dir_offset > file_size || dir_size > file_size - dir_offset ||
      num_entries > dir_size / kCentralEntrySize) {
    return corrupt("central directory outside the file");
  }
  if (dir_size > kMaxCentralDirSize)
    return corrupt("central directory too large");
  OCLIP_ASSIGN_OR_RETURN(std::string directory,
                         ReadRange(in, path, dir_offset, dir_size));
  ZipChecksums checksums;
  checksums.path_ = path;
  checksums.file_size_ = file_size;
  OCLIP_RETURN_IF_ERROR(
      checksums.ParseCentralDirectory(directory, num_entries));
  return checksums;
}

absl::Status ZipChecksums::ParseCentralDirectory(const std::string& directory,
                                                 uint64_t num_entries) {
  const auto* d = reinterpret_cast<const uint8_t*>(directory.data());
  size_t pos = 0;
  for (uint64_t i = 0; i < num_entries; ++i) {
    if (directory.size() - pos < kCentralEntrySize ||
        LoadLe32(d + pos) != kCentralEntrySignature) {
      return absl::DataLossError(
          absl::StrCat(path_, ": bad zip directory entry ", i));
    }
    Entry entry;
    entry.crc = LoadLe32(d + pos + 16);
    entry.flags = static_cast<uint16_t>(LoadLe(d + pos + 8, 2));
    entry.external_attributes = LoadLe32(d + pos + 38);
    entry.method = static_cast<uint16_t>(LoadLe(d + pos + 10, 2));
    entry.stored_size = LoadLe(d + pos + 20, 4);
    entry.size = LoadLe(d + pos + 24, 4);
    entry.local_offset = LoadLe(d + pos + 42, 4);
    const size_t name_size = LoadLe(d + pos + 28, 2);
    const size_t entry_size = kCentralEntrySize + name_size +
                              LoadLe(d + pos + 30, 2) + LoadLe(d + pos + 32, 2);
    if (directory.size() - pos < entry_size) {
      return absl::DataLossError(
          absl::StrCat(path_, ": truncated zip directory entry ", i));
    }
    std::string name(directory, pos + kCentralEntrySize, name_size);
    if (i == 0) folder_ = name.substr(0, name.find('/') + 1);
    // torch.save writes each record once. With two entries of one name, miniz
    // and these checks could each pick a different one.
    const auto [it, inserted] = entries_.emplace(std::move(name), entry);
    if (!inserted) {
      return absl::DataLossError(absl::StrCat(path_, ": record ", absl::CEscape(it->first),
                                              " appears twice in the zip directory"));
    }
    pos += entry_size;
  }
  return absl::OkStatus();
}

absl::Status ZipChecksums::Verify(const std::string& record, const void* data,
                                  size_t size) const {
  if (!verify_crcs_) return absl::OkStatus();
  auto it = entries_.find(folder_ + record);
  if (it == entries_.end()) {
    return absl::DataLossError(absl::StrCat(path_, ": record ", record,
                                            " is not in the zip directory"));
  }
  const uint32_t actual = Crc32(static_cast<const uint8_t*>(data), size);
  if (actual != it->second.crc) {
    return absl::DataLossError(absl::StrCat(
        path_, ": checksum mismatch in record ", record, " (CRC-32 ",
        absl::Hex(actual, absl::kZeroPad8), ", directory says ",
        absl::Hex(it->second.crc, absl::kZeroPad8), ")"));
  }
  return absl::OkStatus();
}

absl::Status ZipChecksums::CheckEntrySize(const std::string& name, const Entry& entry) const {
  // Deflate expands at most 1032:1.
  constexpr uint64_t kMaxDeflateRatio = 1032;
  // LibTorch's miniz reads stored (0) and deflated (8) records only.
  if (entry.method != 0 && entry.method != 8) {
    return absl::DataLossError(absl::StrCat(path_, ": record ", name,
                                            " uses unsupported zip compression method ",
                                            entry.method));
  }
  if (entry.size == 0xffffffff || entry.stored_size == 0xffffffff) return absl::OkStatus();
  const bool possible = entry.method == 0
                            ? entry.size == entry.stored_size && entry.size <= file_size_
                            : entry.stored_size <= file_size_ &&
                                  entry.size <= entry.stored_size * kMaxDeflateRatio + 1024;
  if (!possible) {
    return absl::DataLossError(absl::StrCat(path_, ": record ", name, " claims ", entry.size,
                                            " bytes, impossible for ", entry.stored_size,
                                            " bytes in a ", file_size_, "-byte file"));
  }
  return absl::OkStatus();
}

absl::Status ZipChecksums::CheckRecordSize(const std::string& record) const {
  auto it = entries_.find(folder_ + record);
  if (it == entries_.end()) {
    return absl::DataLossError(absl::StrCat(path_, ": record ", record,
                                            " is not in the zip directory"));
  }
  return CheckEntrySize(record, it->second);
}

absl::Status ZipChecksums::CheckStreamReaderPreconditions() const {
  auto corrupt = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path_, ": ", what));
  };
  // PyTorchStreamReader takes the first entry's folder as the archive's.
  if (entries_.empty() || folder_.empty()) {
    return corrupt("the zip archive has no records in a folder");
  }
  // miniz refuses such entries while opening, and LibTorch leaks on that too.
  for (const auto& [name, entry] : entries_) OCLIP_RETURN_IF_ERROR(CheckEntrySize(name, entry));
  auto it = entries_.find(folder_ + ".data/version");
  if (it == entries_.end()) it = entries_.find(folder_ + "version");
  if (it == entries_.end()) return corrupt("the zip archive has no version record");
  const Entry& version = it->second;
  // LibTorch's constructor extracts this record, so everything miniz checks
  // while extracting it is checked here first: torch.save stores it plain
  // (found by fuzz_torch_archive: an "encrypted" version record).
  constexpr uint16_t kUnreadableFlags = 0x01 | 0x20 | 0x40;
  if ((version.flags & kUnreadableFlags) != 0) {
    return corrupt("the version record is marked encrypted or patched");
  }
  // miniz extracts an entry with the MS-DOS directory attribute as empty, and
  // LibTorch then fails to parse "" (found by fuzz_torch_archive).
  constexpr uint32_t kDosDirectory = 0x10;
  if ((version.external_attributes & kDosDirectory) != 0) {
    return corrupt("the version record is marked as a directory");
  }
  // A zip64 version record (a checkpoint over 4 GiB written by torch.save has
  // its version at the end) is left to LibTorch.
  if (version.local_offset == 0xffffffff || version.stored_size == 0xffffffff) {
    return absl::OkStatus();
  }
  if (version.method != 0 || version.size != version.stored_size) {
    return corrupt("the version record is compressed or its sizes disagree; torch.save stores it");
  }
  constexpr uint64_t kMaxVersionRecord = 64;
  if (version.stored_size > kMaxVersionRecord) {
    return corrupt(absl::StrCat("the version record has ", version.stored_size,
                                " bytes; a version number has a few"));
  }
  constexpr size_t kLocalHeaderSize = 30;
  constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
  std::ifstream in(path_, std::ios::binary);
  if (version.local_offset > file_size_ ||
      file_size_ - version.local_offset < kLocalHeaderSize) {
    return corrupt("the version record lies outside the file");
  }
  OCLIP_ASSIGN_OR_RETURN(std::string header,
                         ReadRange(in, path_, version.local_offset, kLocalHeaderSize));
  const auto* h = reinterpret_cast<const uint8_t*>(header.data());
  if (LoadLe32(h) != kLocalHeaderSignature) return corrupt("bad zip header of the version record");
  const uint64_t data_offset =
      version.local_offset + kLocalHeaderSize + LoadLe(h + 26, 2) + LoadLe(h + 28, 2);
  if (data_offset > file_size_ || file_size_ - data_offset < version.stored_size) {
    return corrupt("the version record lies outside the file");
  }
  // caffe2::stoull of the record: leading blanks, then decimal digits.
  OCLIP_ASSIGN_OR_RETURN(std::string text,
                         ReadRange(in, path_, data_offset, version.stored_size));
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  uint64_t value = 0;
  size_t digits = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i, ++digits) {
    value = std::min<uint64_t>(value * 10 + static_cast<uint64_t>(text[i] - '0'), 1u << 20);
  }
  if (digits == 0 || value < caffe2::serialize::kMinSupportedFileFormatVersion ||
      value > caffe2::serialize::kMaxSupportedFileFormatVersion) {
    return corrupt(absl::StrCat("unsupported archive version '", absl::CEscape(text.substr(0, 16)),
                                "' (this LibTorch reads versions ",
                                caffe2::serialize::kMinSupportedFileFormatVersion, " to ",
                                caffe2::serialize::kMaxSupportedFileFormatVersion, ")"));
  }
  // miniz checks the record's CRC as it extracts it.
  if (Crc32(reinterpret_cast<const uint8_t*>(text.data()), text.size()) != version.crc) {
    return corrupt("checksum mismatch in the version record");
  }
  return absl::OkStatus();
}

// Opens the archive with LibTorch's reader, after oclip's own checks of the
// zip directory (see CheckStreamReaderPreconditions). The directory goes to
// `*directory` when asked for (the CRCs of the records).
absl::StatusOr<std::unique_ptr<PyTorchStreamReader>> OpenArchive(
    const std::string& path, std::optional<ZipChecksums>* directory = nullptr) {
  OCLIP_RETURN_IF_ERROR(CheckOpenable(path));
  OCLIP_ASSIGN_OR_RETURN(ZipChecksums checked, ZipChecksums::Read(path));
  OCLIP_RETURN_IF_ERROR(checked.CheckStreamReaderPreconditions());
  if (directory != nullptr) *directory = std::move(checked);
  return CatchLibTorch(
      path, "opening the zip archive",
      [&]() -> absl::StatusOr<std::unique_ptr<PyTorchStreamReader>> {
        return std::make_unique<PyTorchStreamReader>(path);
      });
}

// Resolves the persistent ids of data.pkl to storages read from
// `data/<key>`, once per key so that views of one storage share it.
class StorageLoader {
 public:
  // `checksums` may be null (no verification); it must outlive the loader.
  StorageLoader(PyTorchStreamReader* reader, const std::string& path,
                const ZipChecksums* checksums)
      : reader_(reader), path_(path), checksums_(checksums) {}

  absl::StatusOr<PyValue> Load(const PyValue& pid);

 private:
  struct Loaded {
    torch::ScalarType dtype;
    PyValue storage;
  };

  absl::Status Corrupt(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat(path_, ": ", what));
  }
  absl::StatusOr<torch::Tensor> ReadStorage(const std::string& key,
                                            torch::ScalarType dtype,
                                            int64_t numel);

  PyTorchStreamReader* reader_;
  std::string path_;
  const ZipChecksums* checksums_;
  std::unordered_map<std::string, Loaded> loaded_;
};

// pid = ('storage', torch.<Type>Storage, key, location, numel).
absl::StatusOr<PyValue> StorageLoader::Load(const PyValue& pid) {
  const std::vector<PyValue>& f = pid.items();
  if (!pid.is_tuple() || f.size() != 5 || !f[0].is_string() ||
      f[0].as_string() != "storage") {
    return Corrupt(absl::StrCat("unexpected persistent id ", pid.DebugString(),
                                " (expected ('storage', type, key, location, "
                                "numel))"));
  }
  const std::optional<torch::ScalarType> dtype = StorageScalarType(f[1]);
  if (!dtype) {
    return Corrupt(absl::StrCat("persistent id names ", f[1].DebugString(),
                                ", not a storage type"));
  }
  if (!f[2].is_string() || !IsValidStorageKey(f[2].as_string())) {
    return Corrupt(absl::StrCat("bad storage key ", f[2].DebugString()));
  }
  if (!f[3].is_string() || !f[4].is_int() || f[4].as_int() < 0) {
    return Corrupt(absl::StrCat("bad location/numel ", f[3].DebugString(), ", ",
                                f[4].DebugString(), " for storage ",
                                f[2].as_string()));
  }
  const std::string& key = f[2].as_string();
  const int64_t numel = f[4].as_int();
  if (auto it = loaded_.find(key); it != loaded_.end()) {
    if (it->second.dtype != *dtype ||
        it->second.storage.as_tensor().numel() != numel) {
      return Corrupt(
          absl::StrCat("storage ", key, " is named with two types or sizes"));
    }
    return it->second.storage;
  }
  OCLIP_ASSIGN_OR_RETURN(torch::Tensor flat, ReadStorage(key, *dtype, numel));
  PyValue storage = PyValue::Storage(std::move(flat));
  loaded_.emplace(key, Loaded{*dtype, storage});
  return storage;
}

absl::StatusOr<torch::Tensor> StorageLoader::ReadStorage(
    const std::string& key, torch::ScalarType dtype, int64_t numel) {
  const std::string record = absl::StrCat("data/", key);
  return CatchLibTorch(
      path_, absl::StrCat("reading record ", record, " of"),
      [&]() -> absl::StatusOr<torch::Tensor> {
        if (!reader_->hasRecord(record)) {
          return Corrupt(absl::StrCat("missing record ", record));
        }
        if (checksums_ != nullptr) OCLIP_RETURN_IF_ERROR(checksums_->CheckRecordSize(record));
        auto [data, size] = reader_->getRecord(record);
        const size_t element_size = c10::elementSize(dtype);
        if (size % element_size != 0 ||
            size / element_size != static_cast<uint64_t>(numel)) {
          return Corrupt(absl::StrCat("record ", record, " has ", size,
                                      " bytes, expected ", numel,
                                      " elements of ", c10::toString(dtype)));
        }
        if (checksums_ != nullptr) {
          OCLIP_RETURN_IF_ERROR(checksums_->Verify(record, data.get(), size));
        }
        // The record's buffer (from LibTorch's CPU allocator, so aligned)
        // becomes the storage: no copy, and the tensors own it.
        c10::Storage storage(c10::Storage::use_byte_size_t(), size,
                             std::move(data), /*allocator=*/nullptr,
                             /*resizable=*/false);
        torch::Tensor flat = torch::empty({0}, torch::dtype(dtype));
        flat.set_(std::move(storage), 0, {numel}, {1});
        return flat;
      });
}

absl::Status CheckByteOrder(PyTorchStreamReader& reader,
                            const std::string& path, const ZipChecksums* directory) {
  // Written since PyTorch 2.1; older archives are little-endian.
  if (!reader.hasRecord("byteorder")) return absl::OkStatus();
  if (directory != nullptr) OCLIP_RETURN_IF_ERROR(directory->CheckRecordSize("byteorder"));
  auto [data, size] = reader.getRecord("byteorder");
  absl::string_view order(static_cast<const char*>(data.get()), size);
  order = absl::StripAsciiWhitespace(order);
  if (order != "little") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " was saved with byte order '", order,
                     "'; only little-endian archives are supported"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PyValue> ReadOpenArchive(PyTorchStreamReader& reader,
                                        const std::string& path,
                                        const ZipChecksums* checksums) {
  if (IsTorchScript(reader)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        " is a TorchScript archive (torch.jit.save), not a torch.save "
        "archive; load it with torch::jit::load"));
  }
  if (!reader.hasRecord("data.pkl")) {
    return absl::DataLossError(
        absl::StrCat(path, " is a zip archive without a data.pkl record"));
  }
  OCLIP_RETURN_IF_ERROR(CheckByteOrder(reader, path, checksums));
  if (checksums != nullptr) OCLIP_RETURN_IF_ERROR(checksums->CheckRecordSize("data.pkl"));
  auto [pickle, pickle_size] = reader.getRecord("data.pkl");
  if (checksums != nullptr) {
    OCLIP_RETURN_IF_ERROR(
        checksums->Verify("data.pkl", pickle.get(), pickle_size));
  }

  StorageLoader loader(&reader, path, checksums);
  UnpickleOptions options;
  options.source_name = absl::StrCat(path, " (data.pkl)");
  options.persistent_load = [&loader](const PyValue& pid) {
    return loader.Load(pid);
  };
  return Unpickle(absl::Span<const uint8_t>(
                      static_cast<const uint8_t*>(pickle.get()), pickle_size),
                  options);
}

}  // namespace

absl::StatusOr<PyValue> ReadTorchSaveArchive(const std::string& path) {
  return ReadTorchSaveArchive(path, TorchArchiveOptions());
}

absl::StatusOr<PyValue> ReadTorchSaveArchive(
    const std::string& path, const TorchArchiveOptions& options) {
  std::optional<ZipChecksums> checksums;
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<PyTorchStreamReader> reader,
                         OpenArchive(path, &checksums));
  // The directory stays for the record-size checks; only CRCs are optional.
  checksums->set_verify_crcs(options.verify_checksums);
  return CatchLibTorch(path, "reading", [&]() -> absl::StatusOr<PyValue> {
    return ReadOpenArchive(*reader, path, checksums ? &*checksums : nullptr);
  });
}

absl::StatusOr<bool> IsTorchSaveArchive(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  char magic[sizeof(kZipMagic)] = {};
  in.read(magic, sizeof(magic));
  if (in.gcount() != static_cast<std::streamsize>(sizeof(magic)) ||
      !std::equal(std::begin(magic), std::end(magic), std::begin(kZipMagic))) {
    return false;
  }
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<PyTorchStreamReader> reader,
                         OpenArchive(path));
  return CatchLibTorch(path, "listing", [&]() -> absl::StatusOr<bool> {
    return reader->hasRecord("data.pkl") && !IsTorchScript(*reader);
  });
}

}  // namespace oclip
