// Tests for the torch.save archive reader (model/checkpoint/torch_archive.h)
// and the restricted unpickler under it (model/checkpoint/pickle.h).
//
// The reference fixtures come from Python (see shared/reference/README.md);
// malformed and malicious archives are written here, with LibTorch's own zip
// writer, into testing::TempDir().

#include "tests/core/scratch_dir.h"
#include "model/checkpoint/torch_archive.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/safetensors.h"
#include "model/checkpoint/pickle.h"

namespace oclip {
namespace {

using ::oclip::testing::ScratchPath;

using std::string_literals::operator""s;

// ---------------------------------------------------------------------------
// Fixtures and helpers.

std::string ReferencePath(const std::string& name) {
  const char* env = std::getenv("OCLIP_REFERENCE_DIR");
  const std::string dir =
      (env != nullptr && *env != '\0') ? env : OCLIP_REFERENCE_DIR_DEFAULT;
  return absl::StrCat(dir, "/", name);
}

std::string TempPath(const std::string& name) {
  return ScratchPath(absl::StrCat("torch_archive_test_", name));
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

void WriteFileBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

torch::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return torch::kDouble;
    case DType::kF32:
      return torch::kFloat;
    case DType::kF16:
      return torch::kHalf;
    case DType::kBF16:
      return torch::kBFloat16;
    case DType::kI64:
      return torch::kLong;
    case DType::kI32:
      return torch::kInt;
    case DType::kI16:
      return torch::kShort;
    case DType::kI8:
      return torch::kChar;
    case DType::kU8:
      return torch::kByte;
    case DType::kBool:
      return torch::kBool;
  }
  return torch::kFloat;
}

// A tensor owning a copy of a safetensors view (the view is unaligned).
torch::Tensor ToTensor(const TensorView& view) {
  torch::Tensor t =
      torch::empty(view.shape, torch::dtype(ToScalarType(view.dtype)));
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), view.size_bytes);
  std::memcpy(t.data_ptr(), view.data, view.size_bytes);
  return t;
}

// Expects `dict` to hold exactly the tensors of `safetensors_name`, each key
// prefixed by `prefix`, with equal dtype, shape and bits.
void ExpectStateDictEquals(const PyValue& dict, const std::string& prefix,
                           const std::string& safetensors_name) {
  ASSERT_TRUE(dict.is_dict()) << dict.DebugString();
  auto reader = SafetensorsReader::Open(ReferencePath(safetensors_name));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(dict.dict_items().size(), (*reader)->names().size());
  for (const auto& [key, value] : dict.dict_items()) {
    ASSERT_TRUE(key.is_string()) << key.DebugString();
    ASSERT_TRUE(absl::StartsWith(key.as_string(), prefix)) << key.as_string();
    const std::string name = key.as_string().substr(prefix.size());
    ASSERT_TRUE(value.is_tensor()) << name << ": " << value.DebugString();
    auto view = (*reader)->Get(name);
    ASSERT_TRUE(view.ok()) << view.status();
    const torch::Tensor expected = ToTensor(*view);
    const torch::Tensor& actual = value.as_tensor();
    EXPECT_EQ(actual.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(actual.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(actual.device().is_cpu()) << name;
    EXPECT_TRUE(torch::equal(actual, expected)) << name;
  }
}

// The data.pkl record of a reference archive, read with LibTorch.
std::string ReadPickleRecord(const std::string& archive) {
  caffe2::serialize::PyTorchStreamReader reader(archive);
  auto [data, size] = reader.getRecord("data.pkl");
  return std::string(static_cast<const char*>(data.get()), size);
}

// Writes a torch.save-style archive (records under "<basename>/").
void WriteArchive(
    const std::string& path,
    const std::vector<std::pair<std::string, std::string>>& records) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  for (const auto& [name, bytes] : records) {
    writer.writeRecord(name, bytes.data(), bytes.size());
  }
  writer.writeEndOfFile();
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(float));
}

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::string& must_mention) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), must_mention))
      << status << "\nshould mention: " << must_mention;
}

// Writes pickles opcode by opcode (protocol 2 unless stated).
class PickleBuilder {
 public:
  PickleBuilder() { bytes_ += "\x80\x02"; }

  PickleBuilder& Raw(const std::string& bytes) {
    bytes_ += bytes;
    return *this;
  }
  PickleBuilder& Op(char op) {
    bytes_ += op;
    return *this;
  }
  PickleBuilder& Mark() { return Op('('); }
  PickleBuilder& Tuple() { return Op('t'); }
  PickleBuilder& Reduce() { return Op('R'); }
  PickleBuilder& Stop() { return Op('.'); }
  PickleBuilder& Global(const std::string& module, const std::string& name) {
    return Raw(absl::StrCat("c", module, "\n", name, "\n"));
  }
  PickleBuilder& Unicode(const std::string& s) {
    Op('X');
    Le32(static_cast<uint32_t>(s.size()));
    return Raw(s);
  }
  PickleBuilder& Int(int32_t v) {
    Op('J');
    return Le32(static_cast<uint32_t>(v));
  }
  PickleBuilder& IntTuple(const std::vector<int32_t>& values) {
    Mark();
    for (int32_t v : values) Int(v);
    return Tuple();
  }
  // ('storage', torch.FloatStorage, key, 'cpu', numel), BINPERSID.
  PickleBuilder& FloatStorage(const std::string& key, int32_t numel) {
    Mark().Unicode("storage").Global("torch", "FloatStorage").Unicode(key);
    Unicode("cpu").Int(numel).Tuple();
    return Op('Q');
  }
  // _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).
  PickleBuilder& Tensor(const std::string& key, int32_t numel, int32_t offset,
                        const std::vector<int32_t>& size,
                        const std::vector<int32_t>& stride) {
    Global("torch._utils", "_rebuild_tensor_v2").Mark();
    FloatStorage(key, numel).Int(offset).IntTuple(size).IntTuple(stride);
    Op('\x89').Global("collections", "OrderedDict").Op(')').Reduce();
    return Tuple().Reduce();
  }
  const std::string& bytes() const { return bytes_; }

 private:
  PickleBuilder& Le32(uint32_t v) {
    for (int i = 0; i < 4; ++i)
      bytes_ += static_cast<char>((v >> (8 * i)) & 0xff);
    return *this;
  }
  std::string bytes_;
};

absl::Span<const uint8_t> AsSpan(const std::string& bytes) {
  return absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// Unpickles with a stand-in storage loader: zero-filled storages of the
// requested type and size (at most 4M elements), one per key and shape.
class FakeStorages {
 public:
  absl::StatusOr<PyValue> Load(const PyValue& pid) {
    const auto& f = pid.items();
    if (!pid.is_tuple() || f.size() != 5 || !f[2].is_string() ||
        !f[4].is_int()) {
      return absl::DataLossError("bad pid");
    }
    const std::optional<torch::ScalarType> dtype = StorageScalarType(f[1]);
    if (!dtype || f[4].as_int() < 0 || f[4].as_int() > (int64_t{1} << 22)) {
      return absl::DataLossError("bad storage");
    }
    const std::string id = absl::StrCat(
        f[2].as_string(), "/", static_cast<int>(*dtype), "/", f[4].as_int());
    auto it = cache_.find(id);
    if (it == cache_.end()) {
      it = cache_
               .emplace(id, PyValue::Storage(torch::zeros(
                                {f[4].as_int()}, torch::dtype(*dtype))))
               .first;
    }
    return it->second;
  }

  absl::StatusOr<PyValue> Unpickle(const std::string& bytes,
                                   int max_depth = 100) {
    UnpickleOptions options;
    options.source_name = "test.pkl";
    options.max_depth = max_depth;
    options.persistent_load = [this](const PyValue& pid) { return Load(pid); };
    return oclip::Unpickle(AsSpan(bytes), options);
  }

 private:
  std::map<std::string, PyValue> cache_;
};

absl::StatusOr<PyValue> UnpickleBytes(const std::string& bytes) {
  UnpickleOptions options;
  options.source_name = "test.pkl";
  return Unpickle(AsSpan(bytes), options);
}

// ---------------------------------------------------------------------------
// The reference checkpoints.

TEST(TorchArchiveTest, StateDictMatchesSafetensors) {
  auto value = ReadTorchSaveArchive(ReferencePath("tiny-vit.bin"));
  ASSERT_TRUE(value.ok()) << value.status();
  ExpectStateDictEquals(*value, "", "tiny-vit.safetensors");
}

TEST(TorchArchiveTest, StateDictKeepsSavedOrder) {
  auto value = ReadTorchSaveArchive(ReferencePath("tiny-vit.bin"));
  ASSERT_TRUE(value.ok()) << value.status();
  // OpenCLIP's CLIP registers positional_embedding first and ln_final last.
  ASSERT_FALSE(value->dict_items().empty());
  EXPECT_EQ(value->dict_items().front().first.as_string(),
            "positional_embedding");
  EXPECT_EQ(value->dict_items().back().first.as_string(), "ln_final.bias");
  const PyValue* logit_scale = value->Find("logit_scale");
  ASSERT_NE(logit_scale, nullptr);
  EXPECT_EQ(logit_scale->as_tensor().dim(), 0);
  EXPECT_EQ(value->Find("no.such.key"), nullptr);
}

TEST(TorchArchiveTest, TrainingCheckpoint) {
  auto value = ReadTorchSaveArchive(ReferencePath("tiny-vit.epoch_7.pt"));
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_TRUE(value->is_dict());

  const PyValue* epoch = value->Find("epoch");
  ASSERT_NE(epoch, nullptr);
  ASSERT_TRUE(epoch->is_int()) << epoch->DebugString();
  EXPECT_EQ(epoch->as_int(), 7);  // The file name's epoch.

  const PyValue* name = value->Find("name");
  ASSERT_NE(name, nullptr);
  EXPECT_TRUE(name->is_string()) << name->DebugString();
  EXPECT_FALSE(name->as_string().empty());

  const PyValue* state_dict = value->Find("state_dict");
  ASSERT_NE(state_dict, nullptr);
  ExpectStateDictEquals(*state_dict, "module.", "tiny-vit.safetensors");

  // torch.optim state_dict(): {"state": {index: {...}}, "param_groups": [...]},
  // whose "params" index every parameter.
  const PyValue* optimizer = value->Find("optimizer");
  ASSERT_NE(optimizer, nullptr);
  ASSERT_TRUE(optimizer->is_dict());
  const PyValue* state = optimizer->Find("state");
  ASSERT_NE(state, nullptr);
  EXPECT_TRUE(state->is_dict());
  for (const auto& [index, param_state] : state->dict_items()) {
    EXPECT_TRUE(index.is_int()) << index.DebugString();
    EXPECT_TRUE(param_state.is_dict()) << param_state.DebugString();
  }
  const PyValue* groups = optimizer->Find("param_groups");
  ASSERT_NE(groups, nullptr);
  ASSERT_TRUE(groups->is_list());
  ASSERT_FALSE(groups->items().empty());
  size_t num_params = 0;
  for (const PyValue& group : groups->items()) {
    ASSERT_TRUE(group.is_dict());
    const PyValue* lr = group.Find("lr");
    ASSERT_NE(lr, nullptr);
    EXPECT_TRUE(lr->is_float());
    EXPECT_GT(lr->as_float(), 0.0);
    const PyValue* betas = group.Find("betas");
    ASSERT_NE(betas, nullptr);
    ASSERT_TRUE(betas->is_tuple());
    EXPECT_EQ(betas->items().size(), 2u);
    const PyValue* params = group.Find("params");
    ASSERT_NE(params, nullptr);
    ASSERT_TRUE(params->is_list());
    for (const PyValue& p : params->items()) {
      EXPECT_TRUE(p.is_int());
      EXPECT_EQ(p.as_int(), static_cast<int64_t>(num_params));
      ++num_params;
    }
  }
  EXPECT_EQ(num_params, state_dict->dict_items().size());
}

TEST(TorchArchiveTest, IsTorchSaveArchiveTellsFormatsApart) {
  auto bin = IsTorchSaveArchive(ReferencePath("tiny-vit.bin"));
  ASSERT_TRUE(bin.ok()) << bin.status();
  EXPECT_TRUE(*bin);
  auto epoch = IsTorchSaveArchive(ReferencePath("tiny-vit.epoch_7.pt"));
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_TRUE(*epoch);
  auto script =
      IsTorchSaveArchive(ReferencePath("tiny-vit-quickgelu.torchscript.pt"));
  ASSERT_TRUE(script.ok()) << script.status();
  EXPECT_FALSE(*script);
  auto safetensors = IsTorchSaveArchive(ReferencePath("tiny-vit.safetensors"));
  ASSERT_TRUE(safetensors.ok()) << safetensors.status();
  EXPECT_FALSE(*safetensors);
  const std::string empty = TempPath("empty.bin");
  WriteFileBytes(empty, "");
  auto empty_result = IsTorchSaveArchive(empty);
  ASSERT_TRUE(empty_result.ok()) << empty_result.status();
  EXPECT_FALSE(*empty_result);
}

TEST(TorchArchiveTest, MissingFileIsNotFound) {
  const std::string path = TempPath("does_not_exist.bin");
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kNotFound,
              path);
  ExpectError(IsTorchSaveArchive(path).status(), absl::StatusCode::kNotFound,
              path);
}

TEST(TorchArchiveTest, TorchScriptArchiveIsRefused) {
  const std::string path = ReferencePath("tiny-vit-quickgelu.torchscript.pt");
  ExpectError(ReadTorchSaveArchive(path).status(),
              absl::StatusCode::kInvalidArgument, "TorchScript");
}

// ---------------------------------------------------------------------------
// Damaged archives.

TEST(TorchArchiveTest, TruncatedArchiveIsDataLoss) {
  const std::string original = ReadFileBytes(ReferencePath("tiny-vit.bin"));
  ASSERT_GT(original.size(), 1000u);
  const std::string path = TempPath("truncated.bin");
  for (size_t size :
       {size_t{0}, size_t{3}, size_t{4}, size_t{100}, size_t{5000},
        original.size() / 3, original.size() / 2, original.size() - 100,
        original.size() - 22, original.size() - 1}) {
    SCOPED_TRACE(size);
    WriteFileBytes(path, original.substr(0, size));
    ExpectError(ReadTorchSaveArchive(path).status(),
                absl::StatusCode::kDataLoss, path);
    auto is_archive = IsTorchSaveArchive(path);
    if (is_archive.ok()) {
      EXPECT_FALSE(*is_archive);  // Too short for the zip magic.
    } else {
      EXPECT_EQ(is_archive.status().code(), absl::StatusCode::kDataLoss);
    }
  }
}

TEST(TorchArchiveTest, FlippedByteInStoredPickleFailsChecksum) {
  // LibTorch's zip reader does not check CRCs: this one would load with a
  // misspelled key.
  std::string bytes = ReadFileBytes(ReferencePath("tiny-vit.bin"));
  const size_t at = bytes.find("positional_embedding");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 3] ^= 0x20;
  const std::string path = TempPath("flipped.bin");
  WriteFileBytes(path, bytes);
  const absl::Status status = ReadTorchSaveArchive(path).status();
  ExpectError(status, absl::StatusCode::kDataLoss, path);
  ExpectError(status, absl::StatusCode::kDataLoss,
              "checksum mismatch in record data.pkl");
}

TEST(TorchArchiveTest, FlippedByteInStorageFailsChecksum) {
  std::string bytes = ReadFileBytes(ReferencePath("tiny-vit.bin"));
  size_t at;
  {
    caffe2::serialize::PyTorchStreamReader reader(
        ReferencePath("tiny-vit.bin"));
    at = reader.getRecordOffset("data/5") + 17;
  }
  ASSERT_LT(at, bytes.size());
  bytes[at] ^= 0x01;
  const std::string path = TempPath("flipped_storage.bin");
  WriteFileBytes(path, bytes);
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "checksum mismatch in record data/5");
  // Without verification the flip goes through (a low mantissa bit).
  TorchArchiveOptions options;
  options.verify_checksums = false;
  auto unverified = ReadTorchSaveArchive(path, options);
  ASSERT_TRUE(unverified.ok()) << unverified.status();
  EXPECT_TRUE(unverified->is_dict());
}

// The offset of `name`'s central directory entry in a zip ("PK\1\2", its
// name at +46), or npos.
size_t CentralEntryOf(const std::string& bytes, const std::string& name) {
  size_t entry = std::string::npos;
  for (size_t at = bytes.find("PK\x01\x02"); at != std::string::npos;
       at = bytes.find("PK\x01\x02", at + 1)) {
    if (bytes.compare(at + 46, name.size(), name) == 0) entry = at;
  }
  return entry;
}

// Rewrites tiny-vit.bin with a damaged data.pkl (valid zip checksums), so that
// the unpickler itself meets the damage.
class RewrittenArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    caffe2::serialize::PyTorchStreamReader reader(
        ReferencePath("tiny-vit.bin"));
    for (const std::string& name : reader.getAllRecords()) {
      if (name == "version") continue;  // Written by writeEndOfFile().
      auto [data, size] = reader.getRecord(name);
      records_.emplace_back(
          name, std::string(static_cast<const char*>(data.get()), size));
    }
  }

  std::string& Record(const std::string& name) {
    for (auto& [record, bytes] : records_) {
      if (record == name) return bytes;
    }
    ADD_FAILURE() << "no record " << name;
    return records_.front().second;
  }

  void Drop(const std::string& name) {
    for (auto it = records_.begin(); it != records_.end(); ++it) {
      if (it->first == name) {
        records_.erase(it);
        return;
      }
    }
    ADD_FAILURE() << "no record " << name;
  }

  std::string Write(const std::string& name) {
    const std::string path = TempPath(name);
    WriteArchive(path, records_);
    return path;
  }

  std::vector<std::pair<std::string, std::string>> records_;
};

TEST_F(RewrittenArchiveTest, UnchangedRecordsStillLoad) {
  const std::string path = Write("rewritten.bin");
  auto value = ReadTorchSaveArchive(path);
  ASSERT_TRUE(value.ok()) << value.status();
  ExpectStateDictEquals(*value, "", "tiny-vit.safetensors");
}

// PyTorchStreamReader throws on these after miniz has opened the archive,
// and LibTorch 1.13 then leaks miniz's state (found by fuzz_torch_archive;
// tests/fuzz/regressions/torch_archive/ replays it under ASan): oclip refuses
// them from the zip directory first.
TEST_F(RewrittenArchiveTest, BadVersionRecordIsDataLossBeforeLibTorch) {
  const std::string original = ReadFileBytes(Write("versioned.bin"));
  // The archive's folder is the file's base name (TempPath's prefix too).
  const std::string record = "torch_archive_test_versioned/version";
  // The version record's data follows its local header ("PK\3\4", 30
  // bytes, name, extra field).
  const size_t name_at = original.find(record);
  ASSERT_NE(name_at, std::string::npos);
  const size_t header = name_at - 30;
  ASSERT_EQ(original.compare(header, 4, "PK\x03\x04"), 0);
  const auto le16 = [&](size_t at) {
    return static_cast<size_t>(static_cast<uint8_t>(original[at])) |
           static_cast<size_t>(static_cast<uint8_t>(original[at + 1])) << 8;
  };
  const size_t data_at = header + 30 + le16(header + 26) + le16(header + 28);
  // The archive with its version record's bytes replaced by `version`.
  const auto write_with_version = [&](const std::string& version) {
    std::string bytes = original;
    bytes.replace(data_at, version.size(), version);
    const std::string path = TempPath("versioned.bin");
    WriteFileBytes(path, bytes);
    return path;
  };
  for (const std::string version : {"99", "0\n", "x\n", " \n"}) {
    SCOPED_TRACE(version);
    const std::string path = write_with_version(version);
    ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
                "unsupported archive version");
    ExpectError(IsTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
                "unsupported archive version");
  }
  // A valid number whose bytes no longer match the record's CRC (miniz
  // checks it while LibTorch's constructor extracts the record).
  for (const std::string version : {"1\n", "2\n"}) {
    if (original.compare(data_at, version.size(), version) == 0) continue;
    SCOPED_TRACE(version);
    const std::string path = write_with_version(version);
    ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
                "checksum mismatch in the version record");
  }
  // Marked encrypted in its central directory entry (flags at +8; found by
  // fuzz_torch_archive, tests/fuzz/regressions/torch_archive/leak-04f4...).
  {
    std::string bytes = original;
    const size_t entry = CentralEntryOf(bytes, record);
    ASSERT_NE(entry, std::string::npos);
    bytes[entry + 8] = static_cast<char>(bytes[entry + 8] | 0x01);
    const std::string path = TempPath("versioned.bin");
    WriteFileBytes(path, bytes);
    ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
                "the version record is marked encrypted");
    // The MS-DOS directory attribute (external attributes at +38): miniz then
    // extracts it as empty (tests/fuzz/regressions/torch_archive/leak-3167...).
    bytes[entry + 8] = original[entry + 8];
    bytes[entry + 38] = static_cast<char>(bytes[entry + 38] | 0x10);
    WriteFileBytes(path, bytes);
    ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
                "the version record is marked as a directory");
  }
  // No version record at all (renamed in the local and central headers).
  std::string renamed = original;
  for (size_t at = renamed.find(record); at != std::string::npos;
       at = renamed.find(record, at + 1)) {
    renamed[at + record.size() - 1] = 'X';
  }
  const std::string path = TempPath("versioned.bin");
  WriteFileBytes(path, renamed);
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "no version record");
}

// Two records of one name: miniz and oclip's checks could each read a
// different one, so such an archive is refused (torch.save never writes one).
TEST_F(RewrittenArchiveTest, DuplicateRecordNameIsDataLoss) {
  std::string bytes = ReadFileBytes(Write("duplicate.bin"));
  // Renames data/3 to data/4 in its local and central headers (not data/30...).
  const std::string from = "torch_archive_test_duplicate/data/3";
  int renamed = 0;
  for (size_t at = bytes.find(from); at != std::string::npos; at = bytes.find(from, at + 1)) {
    if (std::isdigit(static_cast<unsigned char>(bytes[at + from.size()]))) continue;
    bytes[at + from.size() - 1] = '4';
    ++renamed;
  }
  ASSERT_EQ(renamed, 2);
  const std::string path = TempPath("duplicate.bin");
  WriteFileBytes(path, bytes);
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "record torch_archive_test_duplicate/data/4 appears twice");
  ExpectError(IsTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss, "appears twice");
}

// Found by fuzz_torch_archive: a 1 KB archive whose directory claimed a
// 4 GB record made PyTorchStreamReader::getRecord allocate 4 GB
// (tests/fuzz/regressions/torch_archive/oom-*).
TEST_F(RewrittenArchiveTest, ImpossibleRecordSizeIsDataLoss) {
  std::string bytes = ReadFileBytes(Write("sized.bin"));
  // The central directory entry of data.pkl (TempPath's base name is the
  // folder); the uncompressed size is at +24.
  const size_t entry = CentralEntryOf(bytes, "torch_archive_test_sized/data.pkl");
  ASSERT_NE(entry, std::string::npos);
  bytes.replace(entry + 24, 4, std::string("\x00\x00\x00\xf0", 4));
  const std::string path = TempPath("sized.bin");
  WriteFileBytes(path, bytes);
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "data.pkl claims 4026531840 bytes");
}

TEST_F(RewrittenArchiveTest, MissingStorageRecordIsDataLoss) {
  Drop("data/3");
  const std::string path = Write("missing_record.bin");
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "data/3");
}

TEST_F(RewrittenArchiveTest, ShortStorageRecordIsDataLoss) {
  std::string& record = Record("data/0");
  record.resize(record.size() - 4);
  const std::string path = Write("short_record.bin");
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "data/0");
}

TEST_F(RewrittenArchiveTest, MissingPickleIsDataLoss) {
  Drop("data.pkl");
  const std::string path = Write("no_pickle.bin");
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "data.pkl");
  auto is_archive = IsTorchSaveArchive(path);
  ASSERT_TRUE(is_archive.ok()) << is_archive.status();
  EXPECT_FALSE(*is_archive);
}

TEST_F(RewrittenArchiveTest, TruncatedPickleIsDataLoss) {
  std::string& pickle = Record("data.pkl");
  pickle.resize(pickle.size() / 2);
  const std::string path = Write("truncated_pickle.bin");
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              path);
}

TEST_F(RewrittenArchiveTest, FlippedPickleBytesGiveCleanErrors) {
  const std::string original = Record("data.pkl");
  // The PROTO opcode, the first GLOBAL's opcode, and a memo index.
  for (size_t offset : {size_t{0}, size_t{2}, size_t{28}}) {
    SCOPED_TRACE(offset);
    Record("data.pkl") = original;
    Record("data.pkl")[offset] = '\xff';
    const std::string path = Write("flipped_pickle.bin");
    auto value = ReadTorchSaveArchive(path);
    EXPECT_FALSE(value.ok());
    EXPECT_TRUE(value.status().code() == absl::StatusCode::kDataLoss ||
                value.status().code() == absl::StatusCode::kInvalidArgument)
        << value.status();
    EXPECT_TRUE(absl::StrContains(value.status().message(), path))
        << value.status();
  }
}

// ---------------------------------------------------------------------------
// Hand-made archives.

TEST(TorchArchiveTest, RefusesPosixSystem) {
  // os.system('echo pwned'), as a malicious checkpoint would pickle it.
  const std::string pickle = PickleBuilder()
                                 .Global("posix", "system")
                                 .Mark()
                                 .Unicode("echo pwned")
                                 .Tuple()
                                 .Reduce()
                                 .Stop()
                                 .bytes();
  const std::string path = TempPath("malicious.bin");
  WriteArchive(path, {{"data.pkl", pickle}});
  auto is_archive = IsTorchSaveArchive(path);
  ASSERT_TRUE(is_archive.ok()) << is_archive.status();
  EXPECT_TRUE(*is_archive);
  const absl::Status status = ReadTorchSaveArchive(path).status();
  ExpectError(status, absl::StatusCode::kInvalidArgument,
              "refusing to load global posix.system from");
  ExpectError(status, absl::StatusCode::kInvalidArgument, path);
}

TEST(TorchArchiveTest, RefusesStackGlobalAndLoadFromBytes) {
  // Protocol 4: SHORT_BINUNICODE 'posix', SHORT_BINUNICODE 'system',
  // STACK_GLOBAL.
  const std::string stack_global =
      "\x80\x04\x8c\x05posix\x8c\x06system\x93)R."s;
  ExpectError(UnpickleBytes(stack_global).status(),
              absl::StatusCode::kInvalidArgument, "posix.system");
  const std::string load_from_bytes =
      PickleBuilder()
          .Global("torch.storage", "_load_from_bytes")
          .Stop()
          .bytes();
  ExpectError(UnpickleBytes(load_from_bytes).status(),
              absl::StatusCode::kInvalidArgument,
              "torch.storage._load_from_bytes");
}

TEST(TorchArchiveTest, TensorsShareTheirStorage) {
  // {'a': storage[0:6] as 2x3, 'b': storage[2:4], 'c': a transposed view}.
  PickleBuilder b;
  b.Op('}').Mark();
  b.Unicode("a").Tensor("0", 6, 0, {2, 3}, {3, 1});
  b.Unicode("b").Tensor("0", 6, 2, {2}, {1});
  b.Unicode("c").Tensor("0", 6, 0, {3, 2}, {1, 3});
  b.Op('u').Stop();
  const std::string path = TempPath("shared.bin");
  WriteArchive(path, {{"data.pkl", b.bytes()},
                      {"data/0", FloatBytes({0, 1, 2, 3, 4, 5})}});
  auto value = ReadTorchSaveArchive(path);
  ASSERT_TRUE(value.ok()) << value.status();
  torch::Tensor a = value->Find("a")->as_tensor();
  const torch::Tensor bt = value->Find("b")->as_tensor();
  const torch::Tensor c = value->Find("c")->as_tensor();
  EXPECT_TRUE(torch::equal(a, torch::arange(6, torch::kFloat).reshape({2, 3})));
  EXPECT_TRUE(torch::equal(bt, torch::tensor({2.0f, 3.0f})));
  EXPECT_TRUE(torch::equal(c, a.t()));
  EXPECT_TRUE(bt.is_alias_of(a));
  EXPECT_TRUE(c.is_alias_of(a));
  EXPECT_EQ(bt.data_ptr<float>(), a.data_ptr<float>() + 2);
  a.index_put_({0, 2}, 42.0f);  // One storage: writes show through views.
  EXPECT_EQ(bt[0].item<float>(), 42.0f);
}

TEST(TorchArchiveTest, ParameterGivesItsData) {
  PickleBuilder b;
  b.Global("torch._utils", "_rebuild_parameter").Mark();
  b.Tensor("0", 3, 0, {3}, {1}).Op('\x88');  // requires_grad=True
  b.Global("collections", "OrderedDict")
      .Op(')')
      .Reduce()
      .Tuple()
      .Reduce()
      .Stop();
  const std::string path = TempPath("parameter.bin");
  WriteArchive(path,
               {{"data.pkl", b.bytes()}, {"data/0", FloatBytes({1, 2, 3})}});
  auto value = ReadTorchSaveArchive(path);
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_TRUE(value->is_tensor()) << value->DebugString();
  EXPECT_TRUE(
      torch::equal(value->as_tensor(), torch::tensor({1.0f, 2.0f, 3.0f})));
}

TEST(TorchArchiveTest, ViewOutsideItsStorageIsDataLoss) {
  const std::string path = TempPath("out_of_bounds.bin");
  // 2x3 with stride (3, 1) from offset 1 reaches element 6 of 6.
  WriteArchive(
      path, {{"data.pkl",
              PickleBuilder().Tensor("0", 6, 1, {2, 3}, {3, 1}).Stop().bytes()},
             {"data/0", FloatBytes({0, 1, 2, 3, 4, 5})}});
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "exceeds its storage");
}

TEST(TorchArchiveTest, StorageSizeMismatchIsDataLoss) {
  const std::string path = TempPath("numel_mismatch.bin");
  WriteArchive(
      path,
      {{"data.pkl", PickleBuilder().Tensor("0", 8, 0, {2}, {1}).Stop().bytes()},
       {"data/0", FloatBytes({0, 1, 2, 3, 4, 5})}});
  ExpectError(ReadTorchSaveArchive(path).status(), absl::StatusCode::kDataLoss,
              "data/0");
}

// ---------------------------------------------------------------------------
// The unpickler on its own.

TEST(UnpickleTest, Scalars) {
  PickleBuilder b;
  b.Op(']').Mark();
  b.Op('N').Op('\x88').Op('\x89');
  b.Int(-5).Raw("K\xff").Raw("M\x34\x12");
  b.Raw("\x8a\x01\xff"s);                // LONG1 -1
  b.Raw("\x8a\x08\0\0\0\0\0\0\0\x80"s);  // LONG1 INT64_MIN
  b.Raw("G\x3f\xf8\0\0\0\0\0\0"s);       // BINFLOAT 1.5
  b.Unicode("caf\xc3\xa9").Raw("U\x02hi"s).Raw("C\x02\x00\x01"s);
  b.Op('e').Stop();
  auto value = UnpickleBytes(b.bytes());
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_TRUE(value->is_list());
  const auto& v = value->items();
  ASSERT_EQ(v.size(), 12u);
  EXPECT_TRUE(v[0].is_none());
  EXPECT_TRUE(v[1].is_bool() && v[1].as_bool());
  EXPECT_TRUE(v[2].is_bool() && !v[2].as_bool());
  EXPECT_EQ(v[3].as_int(), -5);
  EXPECT_EQ(v[4].as_int(), 255);
  EXPECT_EQ(v[5].as_int(), 0x1234);
  EXPECT_EQ(v[6].as_int(), -1);
  EXPECT_EQ(v[7].as_int(), std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(v[8].is_float());
  EXPECT_EQ(v[8].as_float(), 1.5);
  EXPECT_EQ(v[9].as_string(), "caf\xc3\xa9");
  EXPECT_TRUE(v[10].is_string());  // SHORT_BINSTRING decodes like torch.load.
  EXPECT_EQ(v[10].as_string(), "hi");
  EXPECT_TRUE(v[11].is_bytes());
  EXPECT_EQ(v[11].as_string(), std::string("\0\x01", 2));
}

TEST(UnpickleTest, ContainersAndMemo) {
  // d = {}; d['x'] = [1, 2]; d[3] = (d['x'], 'y'); d['x'] = None (replaces).
  PickleBuilder b;
  b.Op('}').Raw("q\x00"s);
  b.Unicode("x").Op(']').Raw("q\x01").Mark().Int(1).Int(2).Op('e').Op('s');
  b.Int(3).Raw("h\x01").Unicode("y").Op('\x86').Op('s');
  b.Unicode("x").Op('N').Op('s');
  b.Op('0').Raw("h\x00"s).Stop();  // POP the dict, push it back from the memo.
  auto value = UnpickleBytes(b.bytes());
  ASSERT_TRUE(value.ok()) << value.status();
  ASSERT_TRUE(value->is_dict());
  ASSERT_EQ(value->dict_items().size(), 2u);
  EXPECT_EQ(value->dict_items()[0].first.as_string(), "x");
  EXPECT_TRUE(value->Find("x")->is_none());
  const PyValue* t = value->FindInt(3);
  ASSERT_NE(t, nullptr);
  ASSERT_TRUE(t->is_tuple());
  ASSERT_EQ(t->items().size(), 2u);
  ASSERT_EQ(t->items()[0].items().size(), 2u);
  EXPECT_EQ(t->items()[0].items()[1].as_int(), 2);
  EXPECT_EQ(t->items()[1].as_string(), "y");
}

TEST(UnpickleTest, AccessorsOfOtherKindsGiveZeroValues) {
  const PyValue none;
  EXPECT_FALSE(none.as_bool());
  EXPECT_EQ(none.as_int(), 0);
  EXPECT_EQ(none.as_float(), 0.0);
  EXPECT_EQ(none.as_string(), "");
  EXPECT_FALSE(none.as_tensor().defined());
  EXPECT_TRUE(none.items().empty());
  EXPECT_TRUE(none.dict_items().empty());
  EXPECT_EQ(none.Find("x"), nullptr);
  EXPECT_EQ(PyValue::Int(3).as_float(), 3.0);
  EXPECT_EQ(PyValue::Bool(true).as_int(), 1);
}

TEST(UnpickleTest, MalformedPicklesAreDataLoss) {
  struct Case {
    std::string name;
    std::string bytes;
    std::string must_mention;
  };
  const std::vector<Case> cases = {
      {"empty", ""s, "no STOP"},
      {"no stop", "\x80\x02N"s, "no STOP"},
      {"stop on empty stack", "\x80\x02."s, "stack underflow"},
      {"tuple without mark", "\x80\x02Nt."s, "no MARK"},
      {"tuple1 below mark", "\x80\x02N(\x85."s, "stack underflow"},
      {"setitem underflow", "\x80\x02}Ns."s, "stack underflow"},
      {"bad memo index", "\x80\x02h\x05."s, "memo index 5"},
      {"bad long memo index", "\x80\x02j\xff\xff\xff\xff."s,
       "memo index 4294967295"},
      {"huge unicode length", "\x80\x02X\xff\xff\xff\xff."s, "truncated"},
      {"huge bytes8 length", "\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f."s,
       "truncated"},
      {"unknown opcode", "\x80\x02\xff."s, "unknown opcode 0xff"},
      {"unknown protocol", "\x80\x09N."s, "protocol"},
      {"odd setitems", "\x80\x02}(Nu."s, "odd"},
      {"reference cycle",
       "\x80\x02]q\x00h\x00"
       "a."s,
       "cycle"},
      {"truncated global",
       "\x80\x02"
       "ccollections\nOrd"s,
       "truncated"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const absl::Status status = UnpickleBytes(c.bytes).status();
    ExpectError(status, absl::StatusCode::kDataLoss, c.must_mention);
    ExpectError(status, absl::StatusCode::kDataLoss, "test.pkl");
  }
}

TEST(UnpickleTest, UnknownOpcodeNamesItsOffset) {
  const absl::Status status = UnpickleBytes("\x80\x02N\xfe."s).status();
  ExpectError(status, absl::StatusCode::kDataLoss, "offset 3");
  ExpectError(status, absl::StatusCode::kDataLoss, "0xfe");
}

TEST(UnpickleTest, RefusesWhatStateDictsNeverUse) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x80\x02"
       "ccollections\nOrderedDict\n)\x81."s,
       "NEWOBJ"},
      {"\x80\x02]Nb."s, "BUILD on list"},
      {"\x80\x02}Na."s, "appending to dict"},
      {"\x80\x02"
       "ctorch\nFloatStorage\n)R."s,
       "calling global torch.FloatStorage"},
      {"\x80\x02NQ."s, "persistent id without a persistent_load"},
      {"\x80\x02\x8a\x09\0\0\0\0\0\0\0\0\x01."s, "does not fit in 64 bits"},
  };
  for (const auto& [bytes, must_mention] : cases) {
    SCOPED_TRACE(must_mention);
    const absl::Status status = UnpickleBytes(bytes).status();
    EXPECT_TRUE(absl::StrContains(status.message(), must_mention)) << status;
    EXPECT_TRUE(status.code() == absl::StatusCode::kInvalidArgument ||
                status.code() == absl::StatusCode::kDataLoss)
        << status;
  }
  EXPECT_EQ(UnpickleBytes("\x80\x02]Nb."s).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(UnpickleTest, DeepNestingIsRefusedWithoutRecursion) {
  // A million nested 1-tuples in a million bytes: releasing or walking that
  // recursively would overflow the stack.
  std::string deep = "\x80\x02N";
  deep.append(1000000, '\x85');
  deep += '.';
  ExpectError(UnpickleBytes(deep).status(), absl::StatusCode::kDataLoss,
              "nested deeper");
  // The same garbage left unreferenced on the stack is released safely too.
  std::string unreferenced = "\x80\x02N";
  unreferenced.append(1000000, '\x85');
  unreferenced += "N.";
  auto value = UnpickleBytes(unreferenced);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_TRUE(value->is_none());
  // A subtree shared by two paths counts at its deeper place, even when the
  // walk meets it first at the shallower one: (T3, wrap5(T3)), T3 =
  // (((None,),),).
  FakeStorages storages;
  const std::string shared =
      "\x80\x02N\x85\x85\x85q\x00(h\x00h\x00\x85\x85\x85\x85\x85t."s;
  ExpectError(storages.Unpickle(shared, /*max_depth=*/8).status(),
              absl::StatusCode::kDataLoss, "nested deeper than 8");
  auto ok = storages.Unpickle(shared, /*max_depth=*/9);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->is_tuple());
}

TEST(UnpickleTest, EveryTruncationOfARealPickleIsDataLoss) {
  const std::string pickle = ReadPickleRecord(ReferencePath("tiny-vit.bin"));
  FakeStorages storages;
  auto full = storages.Unpickle(pickle);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->is_dict());
  for (size_t size = 0; size < pickle.size(); ++size) {
    const absl::Status status =
        storages.Unpickle(pickle.substr(0, size)).status();
    ASSERT_EQ(status.code(), absl::StatusCode::kDataLoss)
        << "truncated to " << size << ": " << status;
  }
}

TEST(UnpickleTest, RandomCorruptionNeverCrashes) {
  const std::string pickle =
      ReadPickleRecord(ReferencePath("tiny-vit.epoch_7.pt"));
  FakeStorages storages;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<size_t> position(0, pickle.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int failures = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string damaged = pickle;
    for (int k = 0; k <= i % 3; ++k) {
      damaged[position(rng)] = static_cast<char>(byte(rng));
    }
    const absl::Status status = storages.Unpickle(damaged).status();
    if (!status.ok()) {
      ++failures;
      ASSERT_TRUE(status.code() == absl::StatusCode::kDataLoss ||
                  status.code() == absl::StatusCode::kInvalidArgument)
          << status;
    }
  }
  EXPECT_GT(failures, 0);
}

}  // namespace
}  // namespace oclip
