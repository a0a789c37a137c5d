#include "model/checkpoint/pickle.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <iterator>
#include <limits>
#include <new>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/status.h"

namespace oclip {
namespace {

// ---------------------------------------------------------------------------
// Opcodes (Python's Lib/pickle.py names).

enum Opcode : uint8_t {
  kMark = '(',
  kStop = '.',
  kPop = '0',
  kPopMark = '1',
  kDup = '2',
  kFloat = 'F',
  kInt = 'I',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kLong = 'L',
  kBinInt2 = 'M',
  kNone = 'N',
  kPersId = 'P',
  kBinPersId = 'Q',
  kReduce = 'R',
  kString = 'S',
  kBinString = 'T',
  kShortBinString = 'U',
  kUnicode = 'V',
  kBinUnicode = 'X',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kEmptyDict = '}',
  kAppends = 'e',
  kGet = 'g',
  kBinGet = 'h',
  kInst = 'i',
  kLongBinGet = 'j',
  kList = 'l',
  kEmptyList = ']',
  kObj = 'o',
  kPut = 'p',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kEmptyTuple = ')',
  kSetItems = 'u',
  kBinFloat = 'G',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kProto = 0x80,
  kNewObj = 0x81,
  kExt1 = 0x82,
  kExt2 = 0x83,
  kExt4 = 0x84,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kLong4 = 0x8b,
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kBinBytes8 = 0x8e,
  kEmptySet = 0x8f,
  kAddItems = 0x90,
  kFrozenSet = 0x91,
  kNewObjEx = 0x92,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
  kByteArray8 = 0x96,
  kNextBuffer = 0x97,
  kReadOnlyBuffer = 0x98,
};

struct OpcodeInfo {
  uint8_t op;
  const char* name;
};

constexpr OpcodeInfo kOpcodeNames[] = {
    {kMark, "MARK"},
    {kStop, "STOP"},
    {kPop, "POP"},
    {kPopMark, "POP_MARK"},
    {kDup, "DUP"},
    {kFloat, "FLOAT"},
    {kInt, "INT"},
    {kBinInt, "BININT"},
    {kBinInt1, "BININT1"},
    {kLong, "LONG"},
    {kBinInt2, "BININT2"},
    {kNone, "NONE"},
    {kPersId, "PERSID"},
    {kBinPersId, "BINPERSID"},
    {kReduce, "REDUCE"},
    {kString, "STRING"},
    {kBinString, "BINSTRING"},
    {kShortBinString, "SHORT_BINSTRING"},
    {kUnicode, "UNICODE"},
    {kBinUnicode, "BINUNICODE"},
    {kAppend, "APPEND"},
    {kBuild, "BUILD"},
    {kGlobal, "GLOBAL"},
    {kDict, "DICT"},
    {kEmptyDict, "EMPTY_DICT"},
    {kAppends, "APPENDS"},
    {kGet, "GET"},
    {kBinGet, "BINGET"},
    {kInst, "INST"},
    {kLongBinGet, "LONG_BINGET"},
    {kList, "LIST"},
    {kEmptyList, "EMPTY_LIST"},
    {kObj, "OBJ"},
    {kPut, "PUT"},
    {kBinPut, "BINPUT"},
    {kLongBinPut, "LONG_BINPUT"},
    {kSetItem, "SETITEM"},
    {kTuple, "TUPLE"},
    {kEmptyTuple, "EMPTY_TUPLE"},
    {kSetItems, "SETITEMS"},
    {kBinFloat, "BINFLOAT"},
    {kBinBytes, "BINBYTES"},
    {kShortBinBytes, "SHORT_BINBYTES"},
    {kProto, "PROTO"},
    {kNewObj, "NEWOBJ"},
    {kExt1, "EXT1"},
    {kExt2, "EXT2"},
    {kExt4, "EXT4"},
    {kTuple1, "TUPLE1"},
    {kTuple2, "TUPLE2"},
    {kTuple3, "TUPLE3"},
    {kNewTrue, "NEWTRUE"},
    {kNewFalse, "NEWFALSE"},
    {kLong1, "LONG1"},
    {kLong4, "LONG4"},
    {kShortBinUnicode, "SHORT_BINUNICODE"},
    {kBinUnicode8, "BINUNICODE8"},
    {kBinBytes8, "BINBYTES8"},
    {kEmptySet, "EMPTY_SET"},
    {kAddItems, "ADDITEMS"},
    {kFrozenSet, "FROZENSET"},
    {kNewObjEx, "NEWOBJ_EX"},
    {kStackGlobal, "STACK_GLOBAL"},
    {kMemoize, "MEMOIZE"},
    {kFrame, "FRAME"},
    {kByteArray8, "BYTEARRAY8"},
    {kNextBuffer, "NEXT_BUFFER"},
    {kReadOnlyBuffer, "READONLY_BUFFER"},
};

// The name of a known opcode, nullptr for a byte that is no opcode.
const char* OpcodeName(uint8_t op) {
  for (const OpcodeInfo& info : kOpcodeNames) {
    if (info.op == op) return info.name;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// The globals a checkpoint may name. Everything else is refused.

enum class GlobalKind {
  kOrderedDict,
  kRebuildTensorV2,
  kRebuildParameter,
  kStorageType,
};

struct AllowedGlobal {
  const char* module;
  const char* name;
  GlobalKind kind;
  torch::ScalarType storage_type;  // Only for kStorageType.
};

constexpr AllowedGlobal kAllowedGlobals[] = {
    {"collections", "OrderedDict", GlobalKind::kOrderedDict, torch::kByte},
    {"torch._utils", "_rebuild_tensor_v2", GlobalKind::kRebuildTensorV2,
     torch::kByte},
    {"torch._utils", "_rebuild_parameter", GlobalKind::kRebuildParameter,
     torch::kByte},
    {"torch", "FloatStorage", GlobalKind::kStorageType, torch::kFloat},
    {"torch", "HalfStorage", GlobalKind::kStorageType, torch::kHalf},
    {"torch", "BFloat16Storage", GlobalKind::kStorageType, torch::kBFloat16},
    {"torch", "DoubleStorage", GlobalKind::kStorageType, torch::kDouble},
    {"torch", "LongStorage", GlobalKind::kStorageType, torch::kLong},
    {"torch", "IntStorage", GlobalKind::kStorageType, torch::kInt},
    {"torch", "ShortStorage", GlobalKind::kStorageType, torch::kShort},
    {"torch", "CharStorage", GlobalKind::kStorageType, torch::kChar},
    {"torch", "ByteStorage", GlobalKind::kStorageType, torch::kByte},
    {"torch", "BoolStorage", GlobalKind::kStorageType, torch::kBool},
};

bool IsAllowedGlobal(absl::string_view module, absl::string_view name) {
  for (const AllowedGlobal& g : kAllowedGlobals) {
    if (module == g.module && name == g.name) return true;
  }
  return false;
}

// The whitelist entry of a kGlobal value ("module.name").
const AllowedGlobal* GlobalEntry(const PyValue& value) {
  if (!value.is_global()) return nullptr;
  const std::string& qualified = value.as_string();
  for (const AllowedGlobal& g : kAllowedGlobals) {
    const size_t module_size = std::strlen(g.module);
    if (qualified.size() > module_size && qualified[module_size] == '.' &&
        qualified.compare(0, module_size, g.module) == 0 &&
        qualified.compare(module_size + 1, std::string::npos, g.name) == 0) {
      return &g;
    }
  }
  return nullptr;
}

// Largest number of dimensions accepted for a tensor view.
constexpr size_t kMaxTensorDims = 64;
// Largest length in bytes of a GLOBAL module or name line.
constexpr size_t kMaxGlobalLine = 1024;

bool IsContainer(const PyValue& value) {
  return value.is_list() || value.is_tuple() || value.is_dict();
}

size_t ChildCount(const PyValue& value) {
  if (value.is_dict()) return 2 * value.dict_items().size();
  return value.items().size();
}

const PyValue& Child(const PyValue& value, size_t i) {
  if (value.is_dict()) {
    const auto& item = value.dict_items()[i / 2];
    return i % 2 == 0 ? item.first : item.second;
  }
  return value.items()[i];
}

}  // namespace

// ---------------------------------------------------------------------------
// PyValue

PyValue PyValue::Bool(bool value) {
  PyValue v;
  v.kind_ = Kind::kBool;
  v.int_ = value ? 1 : 0;
  return v;
}

PyValue PyValue::Int(int64_t value) {
  PyValue v;
  v.kind_ = Kind::kInt;
  v.int_ = value;
  return v;
}

PyValue PyValue::Float(double value) {
  PyValue v;
  v.kind_ = Kind::kFloat;
  v.float_ = value;
  return v;
}

PyValue PyValue::String(std::string value) {
  PyValue v;
  v.kind_ = Kind::kString;
  v.string_ = std::make_shared<const std::string>(std::move(value));
  return v;
}

PyValue PyValue::Bytes(std::string value) {
  PyValue v;
  v.kind_ = Kind::kBytes;
  v.string_ = std::make_shared<const std::string>(std::move(value));
  return v;
}

PyValue PyValue::Tensor(torch::Tensor value) {
  PyValue v;
  v.kind_ = Kind::kTensor;
  v.tensor_ = std::move(value);
  return v;
}

PyValue PyValue::Storage(torch::Tensor flat) {
  PyValue v;
  v.kind_ = Kind::kStorage;
  v.tensor_ = std::move(flat);
  return v;
}

PyValue PyValue::List(std::vector<PyValue> items) {
  PyValue v;
  v.kind_ = Kind::kList;
  v.items_ = std::make_shared<std::vector<PyValue>>(std::move(items));
  return v;
}

PyValue PyValue::Tuple(std::vector<PyValue> items) {
  PyValue v;
  v.kind_ = Kind::kTuple;
  v.items_ = std::make_shared<std::vector<PyValue>>(std::move(items));
  return v;
}

PyValue PyValue::Dict(DictItems items) {
  PyValue v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<DictData>();
  v.dict_->items.reserve(items.size());
  for (auto& [key, value] : items) v.SetItem(std::move(key), std::move(value));
  return v;
}

PyValue PyValue::Global(std::string qualified_name) {
  PyValue v;
  v.kind_ = Kind::kGlobal;
  v.string_ = std::make_shared<const std::string>(std::move(qualified_name));
  return v;
}

bool PyValue::as_bool() const { return kind_ == Kind::kBool && int_ != 0; }

int64_t PyValue::as_int() const {
  return (kind_ == Kind::kInt || kind_ == Kind::kBool) ? int_ : 0;
}

double PyValue::as_float() const {
  if (kind_ == Kind::kFloat) return float_;
  if (kind_ == Kind::kInt || kind_ == Kind::kBool) {
    return static_cast<double>(int_);
  }
  return 0.0;
}

const std::string& PyValue::as_string() const {
  static const auto* const kEmpty = new std::string();
  return string_ ? *string_ : *kEmpty;
}

const torch::Tensor& PyValue::as_tensor() const {
  static const auto* const kUndefined = new torch::Tensor();
  return (kind_ == Kind::kTensor || kind_ == Kind::kStorage) ? tensor_
                                                             : *kUndefined;
}

const std::vector<PyValue>& PyValue::items() const {
  static const auto* const kEmpty = new std::vector<PyValue>();
  return items_ ? *items_ : *kEmpty;
}

const PyValue::DictItems& PyValue::dict_items() const {
  static const auto* const kEmpty = new DictItems();
  return dict_ ? dict_->items : *kEmpty;
}

std::optional<std::string> PyValue::IndexKey(const PyValue& key) {
  switch (key.kind_) {
    case Kind::kString:
      return absl::StrCat("s", *key.string_);
    case Kind::kBytes:
      return absl::StrCat("b", *key.string_);
    case Kind::kInt:
    case Kind::kBool:  // Python: True == 1, hash(True) == hash(1).
      return absl::StrCat("i", key.int_);
    default:
      return std::nullopt;
  }
}

const PyValue* PyValue::Find(const std::string& key) const {
  if (!dict_) return nullptr;
  auto it = dict_->index.find(absl::StrCat("s", key));
  return it == dict_->index.end() ? nullptr : &dict_->items[it->second].second;
}

const PyValue* PyValue::FindInt(int64_t key) const {
  if (!dict_) return nullptr;
  auto it = dict_->index.find(absl::StrCat("i", key));
  return it == dict_->index.end() ? nullptr : &dict_->items[it->second].second;
}

void PyValue::SetItem(PyValue key, PyValue value) const {
  std::optional<std::string> index_key = IndexKey(key);
  if (index_key) {
    auto [it, inserted] =
        dict_->index.emplace(std::move(*index_key), dict_->items.size());
    if (!inserted) {
      dict_->items[it->second].second = std::move(value);
      return;
    }
  }
  // Keys of other kinds (None, floats, tuples) are kept without deduplication:
  // checkpoints do not use them, and comparing them would cost O(n) per item.
  dict_->items.emplace_back(std::move(key), std::move(value));
}

void PyValue::ClearChildren() const {
  if (items_) {
    items_->clear();
    items_->shrink_to_fit();
  }
  if (dict_) {
    dict_->items.clear();
    dict_->items.shrink_to_fit();
    dict_->index.clear();
  }
}

const void* PyValue::container_id() const {
  if (items_) return items_.get();
  return dict_.get();
}

std::string PyValue::DebugString() const {
  constexpr size_t kMaxShown = 40;
  switch (kind_) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return int_ ? "True" : "False";
    case Kind::kInt:
      return absl::StrCat(int_);
    case Kind::kFloat:
      return absl::StrCat(float_);
    case Kind::kString:
      return absl::StrCat("'", string_->substr(0, kMaxShown),
                          string_->size() > kMaxShown ? "...'" : "'");
    case Kind::kBytes:
      return absl::StrCat("bytes[", string_->size(), "]");
    case Kind::kTensor:
    case Kind::kStorage: {
      std::string what = kind_ == Kind::kTensor ? "tensor" : "storage";
      if (!tensor_.defined()) return absl::StrCat(what, "(undefined)");
      return absl::StrCat(what, "(", c10::toString(tensor_.scalar_type()), "[",
                          absl::StrJoin(tensor_.sizes(), ", "), "])");
    }
    case Kind::kList:
      return absl::StrCat("list[", items_->size(), "]");
    case Kind::kTuple:
      return absl::StrCat("tuple[", items_->size(), "]");
    case Kind::kDict:
      return absl::StrCat("dict[", dict_->items.size(), "]");
    case Kind::kGlobal:
      return absl::StrCat("global ", *string_);
  }
  return "?";
}

const char* PyValueKindName(PyValue::Kind kind) {
  switch (kind) {
    case PyValue::Kind::kNone:
      return "None";
    case PyValue::Kind::kBool:
      return "bool";
    case PyValue::Kind::kInt:
      return "int";
    case PyValue::Kind::kFloat:
      return "float";
    case PyValue::Kind::kString:
      return "str";
    case PyValue::Kind::kBytes:
      return "bytes";
    case PyValue::Kind::kTensor:
      return "tensor";
    case PyValue::Kind::kList:
      return "list";
    case PyValue::Kind::kTuple:
      return "tuple";
    case PyValue::Kind::kDict:
      return "dict";
    case PyValue::Kind::kGlobal:
      return "global";
    case PyValue::Kind::kStorage:
      return "storage";
  }
  return "?";
}

std::optional<torch::ScalarType> StorageScalarType(const PyValue& value) {
  const AllowedGlobal* entry = GlobalEntry(value);
  if (entry == nullptr || entry->kind != GlobalKind::kStorageType) {
    return std::nullopt;
  }
  return entry->storage_type;
}

// ---------------------------------------------------------------------------
// The interpreter.

namespace internal {

class PickleMachine {
 public:
  PickleMachine(absl::Span<const uint8_t> data, const UnpickleOptions& options)
      : data_(data), options_(options) {}
  PickleMachine(const PickleMachine&) = delete;
  PickleMachine& operator=(const PickleMachine&) = delete;
  ~PickleMachine();

  // Runs to STOP. Call once.
  absl::StatusOr<PyValue> Run();

 private:
  absl::StatusOr<PyValue> RunLoop();
  absl::Status Step(uint8_t op);

  // Errors, naming the source, the opcode being run and its offset.
  absl::Status Corrupt(absl::string_view what) const;
  absl::Status Refuse(absl::string_view what) const;
  std::string Where() const;

  // Input.
  absl::Status Need(uint64_t n) const;
  absl::StatusOr<uint64_t> ReadUnsigned(int num_bytes);
  absl::StatusOr<std::string> ReadBytes(uint64_t n);
  absl::StatusOr<std::string> ReadLine();
  absl::StatusOr<std::string> ReadCounted(int length_bytes);

  // The stack. Pops never reach below the innermost MARK.
  size_t StackBase() const { return marks_.empty() ? 0 : marks_.back(); }
  void Push(PyValue value) { stack_.push_back(std::move(value)); }
  absl::StatusOr<PyValue> Pop();
  absl::StatusOr<PyValue*> Top();
  absl::StatusOr<std::vector<PyValue>> PopMark();

  // Containers; every one is registered in containers_ for the teardown.
  PyValue NewList(std::vector<PyValue> items);
  PyValue NewTuple(std::vector<PyValue> items);
  PyValue NewDict();

  // Opcode groups.
  absl::Status LoadLong(int length_bytes);
  absl::Status LoadFloat();
  absl::Status LoadTuple(size_t n);
  absl::Status LoadAppends(bool from_mark);
  absl::Status LoadSetItems(bool from_mark);
  absl::Status LoadDictFromMark();
  absl::Status LoadPut(uint64_t index);
  absl::Status LoadGet(int index_bytes);
  absl::Status LoadGlobal(const std::string& module, const std::string& name);
  absl::Status LoadStackGlobal();
  absl::Status LoadPersId();
  absl::Status LoadReduce();
  absl::Status LoadBuild();

  // The whitelisted callables.
  absl::StatusOr<PyValue> Call(const PyValue& callable, const PyValue& args);
  absl::StatusOr<PyValue> CallOrderedDict(const PyValue& args);
  absl::StatusOr<PyValue> RebuildTensor(const PyValue& args);
  absl::StatusOr<PyValue> RebuildParameter(const PyValue& args);
  absl::StatusOr<std::vector<int64_t>> IntTuple(const PyValue& value,
                                                absl::string_view what);

  // Checks that `root` is acyclic and at most max_depth deep, and records the
  // height of every container it reaches in heights_.
  absl::Status CheckShape(const PyValue& root);

  absl::Span<const uint8_t> data_;
  const UnpickleOptions& options_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  uint8_t op_ = 0;
  std::vector<PyValue> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyValue> memo_;
  std::vector<PyValue> containers_;
  std::unordered_map<const void*, size_t> heights_;
};

PickleMachine::~PickleMachine() {
  // A pickle can nest containers a million deep in a few bytes (TUPLE1 in a
  // row) or make cycles through the memo; releasing such a tree would recurse
  // once per level. Empty every container the result does not reach first:
  // their children stay alive through containers_, so nothing recurses.
  for (const PyValue& container : containers_) {
    if (heights_.count(container.container_id()) == 0) {
      container.ClearChildren();
    }
  }
}

std::string PickleMachine::Where() const {
  const char* name = OpcodeName(op_);
  return absl::StrCat(options_.source_name, " at offset ", op_offset_, " (",
                      name ? name : "?", ")");
}

absl::Status PickleMachine::Corrupt(absl::string_view what) const {
  return absl::DataLossError(
      absl::StrCat("corrupt pickle in ", Where(), ": ", what));
}

absl::Status PickleMachine::Refuse(absl::string_view what) const {
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported pickle in ", Where(), ": ", what));
}

absl::Status PickleMachine::Need(uint64_t n) const {
  const uint64_t left = data_.size() - pos_;
  if (n > left) {
    return Corrupt(
        absl::StrCat("truncated: needs ", n, " more bytes, ", left, " left"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> PickleMachine::ReadUnsigned(int num_bytes) {
  OCLIP_RETURN_IF_ERROR(Need(num_bytes));
  uint64_t value = 0;
  for (int i = 0; i < num_bytes; ++i) {
    value |= static_cast<uint64_t>(data_[pos_ + i]) << (8 * i);
  }
  pos_ += num_bytes;
  return value;
}

absl::StatusOr<std::string> PickleMachine::ReadBytes(uint64_t n) {
  // Checked before allocating: a corrupted length cannot ask for more memory
  // than the pickle has bytes.
  OCLIP_RETURN_IF_ERROR(Need(n));
  std::string out(reinterpret_cast<const char*>(data_.data() + pos_), n);
  pos_ += n;
  return out;
}

absl::StatusOr<std::string> PickleMachine::ReadLine() {
  const size_t limit = std::min(data_.size(), pos_ + kMaxGlobalLine);
  for (size_t i = pos_; i < limit; ++i) {
    if (data_[i] == '\n') {
      std::string line(reinterpret_cast<const char*>(data_.data() + pos_),
                       i - pos_);
      pos_ = i + 1;
      return line;
    }
  }
  return Corrupt(limit == data_.size() ? "truncated line"
                                       : "line longer than 1024 bytes");
}

// A length-prefixed string; BINSTRING's 4-byte length is signed.
absl::StatusOr<std::string> PickleMachine::ReadCounted(int length_bytes) {
  OCLIP_ASSIGN_OR_RETURN(uint64_t n, ReadUnsigned(length_bytes));
  if (op_ == kBinString && n > std::numeric_limits<int32_t>::max()) {
    return Corrupt("negative length");
  }
  return ReadBytes(n);
}

absl::StatusOr<PyValue> PickleMachine::Pop() {
  if (stack_.size() <= StackBase()) return Corrupt("stack underflow");
  PyValue value = std::move(stack_.back());
  stack_.pop_back();
  return value;
}

absl::StatusOr<PyValue*> PickleMachine::Top() {
  if (stack_.size() <= StackBase()) return Corrupt("stack underflow");
  return &stack_.back();
}

absl::StatusOr<std::vector<PyValue>> PickleMachine::PopMark() {
  if (marks_.empty()) return Corrupt("no MARK on the stack");
  const size_t base = marks_.back();
  marks_.pop_back();
  std::vector<PyValue> items(std::make_move_iterator(stack_.begin() + base),
                             std::make_move_iterator(stack_.end()));
  stack_.resize(base);
  return items;
}

PyValue PickleMachine::NewList(std::vector<PyValue> items) {
  containers_.push_back(PyValue::List(std::move(items)));
  return containers_.back();
}

PyValue PickleMachine::NewTuple(std::vector<PyValue> items) {
  containers_.push_back(PyValue::Tuple(std::move(items)));
  return containers_.back();
}

PyValue PickleMachine::NewDict() {
  containers_.push_back(PyValue::Dict());
  return containers_.back();
}

absl::StatusOr<PyValue> PickleMachine::Run() {
  try {
    return RunLoop();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory while unpickling ", Where()));
  } catch (const c10::Error& e) {
    return Corrupt(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return Corrupt(e.what());
  }
}

absl::StatusOr<PyValue> PickleMachine::RunLoop() {
  while (true) {
    op_offset_ = pos_;
    op_ = 0;
    if (pos_ >= data_.size()) return Corrupt("truncated: no STOP opcode");
    op_ = data_[pos_++];
    if (op_ == kStop) {
      OCLIP_ASSIGN_OR_RETURN(PyValue result, Pop());
      OCLIP_RETURN_IF_ERROR(CheckShape(result));
      return result;
    }
    OCLIP_RETURN_IF_ERROR(Step(op_));
  }
}

absl::Status PickleMachine::Step(uint8_t op) {
  switch (op) {
    case kProto: {
      OCLIP_ASSIGN_OR_RETURN(uint64_t protocol, ReadUnsigned(1));
      if (protocol > 5) {
        return Corrupt(absl::StrCat("unknown protocol ", protocol));
      }
      return absl::OkStatus();
    }
    case kFrame:  // Only a read-ahead hint; the data is all in memory.
      return ReadUnsigned(8).status();
    case kMark:
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case kPop:
      if (stack_.size() > StackBase()) {
        stack_.pop_back();
        return absl::OkStatus();
      }
      return PopMark().status();  // As Python: POP of an empty frame.
    case kPopMark:
      return PopMark().status();
    case kDup: {
      OCLIP_ASSIGN_OR_RETURN(PyValue * top, Top());
      Push(*top);
      return absl::OkStatus();
    }
    case kNone:
      Push(PyValue::None());
      return absl::OkStatus();
    case kNewTrue:
    case kNewFalse:
      Push(PyValue::Bool(op == kNewTrue));
      return absl::OkStatus();
    case kBinInt: {
      OCLIP_ASSIGN_OR_RETURN(uint64_t raw, ReadUnsigned(4));
      Push(PyValue::Int(static_cast<int32_t>(static_cast<uint32_t>(raw))));
      return absl::OkStatus();
    }
    case kBinInt1:
    case kBinInt2: {
      OCLIP_ASSIGN_OR_RETURN(uint64_t raw,
                             ReadUnsigned(op == kBinInt1 ? 1 : 2));
      Push(PyValue::Int(static_cast<int64_t>(raw)));
      return absl::OkStatus();
    }
    case kLong1:
      return LoadLong(1);
    case kLong4:
      return LoadLong(4);
    case kBinFloat:
      return LoadFloat();
    case kBinUnicode:
    case kShortBinUnicode:
    case kBinUnicode8:
    case kBinString:  // torch.load decodes Python 2 strings as UTF-8 str.
    case kShortBinString: {
      const int length_bytes = (op == kBinUnicode || op == kBinString) ? 4
                               : op == kBinUnicode8                    ? 8
                                                                       : 1;
      OCLIP_ASSIGN_OR_RETURN(std::string s, ReadCounted(length_bytes));
      Push(PyValue::String(std::move(s)));
      return absl::OkStatus();
    }
    case kBinBytes:
    case kShortBinBytes:
    case kBinBytes8:
    case kByteArray8: {
      const int length_bytes = op == kBinBytes        ? 4
                               : op == kShortBinBytes ? 1
                                                      : 8;
      OCLIP_ASSIGN_OR_RETURN(std::string s, ReadCounted(length_bytes));
      Push(PyValue::Bytes(std::move(s)));
      return absl::OkStatus();
    }
    case kEmptyList:
      Push(NewList({}));
      return absl::OkStatus();
    case kEmptyTuple:
      Push(NewTuple({}));
      return absl::OkStatus();
    case kEmptyDict:
      Push(NewDict());
      return absl::OkStatus();
    case kList: {
      OCLIP_ASSIGN_OR_RETURN(std::vector<PyValue> items, PopMark());
      Push(NewList(std::move(items)));
      return absl::OkStatus();
    }
    case kTuple: {
      OCLIP_ASSIGN_OR_RETURN(std::vector<PyValue> items, PopMark());
      Push(NewTuple(std::move(items)));
      return absl::OkStatus();
    }
    case kTuple1:
    case kTuple2:
    case kTuple3:
      return LoadTuple(op - kTuple1 + 1);
    case kDict:
      return LoadDictFromMark();
    case kAppend:
      return LoadAppends(/*from_mark=*/false);
    case kAppends:
      return LoadAppends(/*from_mark=*/true);
    case kSetItem:
      return LoadSetItems(/*from_mark=*/false);
    case kSetItems:
      return LoadSetItems(/*from_mark=*/true);
    case kBinPut:
    case kLongBinPut: {
      OCLIP_ASSIGN_OR_RETURN(uint64_t index,
                             ReadUnsigned(op == kBinPut ? 1 : 4));
      return LoadPut(index);
    }
    case kMemoize:
      return LoadPut(memo_.size());
    case kBinGet:
      return LoadGet(1);
    case kLongBinGet:
      return LoadGet(4);
    case kGlobal: {
      OCLIP_ASSIGN_OR_RETURN(std::string module, ReadLine());
      OCLIP_ASSIGN_OR_RETURN(std::string name, ReadLine());
      return LoadGlobal(module, name);
    }
    case kStackGlobal:
      return LoadStackGlobal();
    case kBinPersId:
      return LoadPersId();
    case kReduce:
      return LoadReduce();
    case kBuild:
      return LoadBuild();
    default:
      break;
  }
  if (const char* name = OpcodeName(op)) {
    return Refuse(absl::StrCat("opcode ", name,
                               " is not supported (state dicts never use it)"));
  }
  return Corrupt(
      absl::StrCat("unknown opcode 0x", absl::Hex(op, absl::kZeroPad2)));
}

absl::Status PickleMachine::LoadLong(int length_bytes) {
  OCLIP_ASSIGN_OR_RETURN(uint64_t n, ReadUnsigned(length_bytes));
  if (length_bytes == 4 && n > std::numeric_limits<int32_t>::max()) {
    return Corrupt("negative length");
  }
  if (n > 8) {
    OCLIP_RETURN_IF_ERROR(Need(n));
    return Refuse(
        absl::StrCat("a ", n, "-byte integer does not fit in 64 bits"));
  }
  OCLIP_ASSIGN_OR_RETURN(uint64_t raw, ReadUnsigned(static_cast<int>(n)));
  // Two's complement little-endian: sign-extend from the top byte.
  if (n > 0 && n < 8 && (raw >> (8 * n - 1)) & 1) {
    raw |= ~uint64_t{0} << (8 * n);
  }
  Push(PyValue::Int(static_cast<int64_t>(raw)));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadFloat() {
  OCLIP_RETURN_IF_ERROR(Need(8));
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i)
    bits = (bits << 8) | data_[pos_ + i];  // Big-endian.
  pos_ += 8;
  double value;
  static_assert(sizeof(value) == sizeof(bits));
  std::memcpy(&value, &bits, sizeof(value));
  Push(PyValue::Float(value));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadTuple(size_t n) {
  if (stack_.size() < StackBase() + n) return Corrupt("stack underflow");
  std::vector<PyValue> items(std::make_move_iterator(stack_.end() - n),
                             std::make_move_iterator(stack_.end()));
  stack_.resize(stack_.size() - n);
  Push(NewTuple(std::move(items)));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadAppends(bool from_mark) {
  std::vector<PyValue> values;
  if (from_mark) {
    OCLIP_ASSIGN_OR_RETURN(values, PopMark());
  } else {
    OCLIP_ASSIGN_OR_RETURN(PyValue value, Pop());
    values.push_back(std::move(value));
  }
  OCLIP_ASSIGN_OR_RETURN(PyValue * list, Top());
  if (!list->is_list()) {
    return Refuse(absl::StrCat("appending to ", list->DebugString()));
  }
  std::vector<PyValue>* items = list->mutable_items();
  items->insert(items->end(), std::make_move_iterator(values.begin()),
                std::make_move_iterator(values.end()));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadSetItems(bool from_mark) {
  std::vector<PyValue> values;
  if (from_mark) {
    OCLIP_ASSIGN_OR_RETURN(values, PopMark());
    if (values.size() % 2 != 0) return Corrupt("odd number of SETITEMS items");
  } else {
    OCLIP_ASSIGN_OR_RETURN(PyValue value, Pop());
    OCLIP_ASSIGN_OR_RETURN(PyValue key, Pop());
    values.push_back(std::move(key));
    values.push_back(std::move(value));
  }
  OCLIP_ASSIGN_OR_RETURN(PyValue * dict, Top());
  if (!dict->is_dict()) {
    return Refuse(absl::StrCat("setting an item of ", dict->DebugString()));
  }
  for (size_t i = 0; i < values.size(); i += 2) {
    dict->SetItem(std::move(values[i]), std::move(values[i + 1]));
  }
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadDictFromMark() {
  OCLIP_ASSIGN_OR_RETURN(std::vector<PyValue> values, PopMark());
  if (values.size() % 2 != 0) return Corrupt("odd number of DICT items");
  PyValue dict = NewDict();
  for (size_t i = 0; i < values.size(); i += 2) {
    dict.SetItem(std::move(values[i]), std::move(values[i + 1]));
  }
  Push(std::move(dict));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadPut(uint64_t index) {
  OCLIP_ASSIGN_OR_RETURN(PyValue * top, Top());
  memo_[index] = *top;
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadGet(int index_bytes) {
  OCLIP_ASSIGN_OR_RETURN(uint64_t index, ReadUnsigned(index_bytes));
  auto it = memo_.find(index);
  if (it == memo_.end()) {
    return Corrupt(absl::StrCat("memo index ", index, " was never set"));
  }
  Push(it->second);
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadGlobal(const std::string& module,
                                       const std::string& name) {
  if (!IsAllowedGlobal(module, name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("refusing to load global ", module, ".", name, " from ",
                     options_.source_name, " (offset ", op_offset_,
                     "): only tensors, storages and OrderedDict are allowed"));
  }
  Push(PyValue::Global(absl::StrCat(module, ".", name)));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadStackGlobal() {
  OCLIP_ASSIGN_OR_RETURN(PyValue name, Pop());
  OCLIP_ASSIGN_OR_RETURN(PyValue module, Pop());
  if (!name.is_string() || !module.is_string()) {
    return Corrupt("STACK_GLOBAL needs two strings");
  }
  return LoadGlobal(module.as_string(), name.as_string());
}

absl::Status PickleMachine::LoadPersId() {
  OCLIP_ASSIGN_OR_RETURN(PyValue pid, Pop());
  if (!options_.persistent_load) {
    return Refuse("persistent id without a persistent_load");
  }
  OCLIP_ASSIGN_OR_RETURN(PyValue object, options_.persistent_load(pid));
  Push(std::move(object));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadReduce() {
  OCLIP_ASSIGN_OR_RETURN(PyValue args, Pop());
  OCLIP_ASSIGN_OR_RETURN(PyValue callable, Pop());
  OCLIP_ASSIGN_OR_RETURN(PyValue result, Call(callable, args));
  Push(std::move(result));
  return absl::OkStatus();
}

absl::Status PickleMachine::LoadBuild() {
  OCLIP_ASSIGN_OR_RETURN(PyValue state, Pop());
  OCLIP_ASSIGN_OR_RETURN(PyValue * object, Top());
  // torch.save(state_dict) sets the OrderedDict's `_metadata` attribute (the
  // module versions); the weights do not depend on it.
  if (object->is_dict()) return absl::OkStatus();
  return Refuse(absl::StrCat("BUILD on ", object->DebugString()));
}

absl::StatusOr<PyValue> PickleMachine::Call(const PyValue& callable,
                                            const PyValue& args) {
  const AllowedGlobal* entry = GlobalEntry(callable);
  if (entry == nullptr) {
    return Refuse(absl::StrCat("calling ", callable.DebugString()));
  }
  if (!args.is_tuple()) {
    return Corrupt(absl::StrCat("REDUCE arguments are ", args.DebugString(),
                                ", not a tuple"));
  }
  switch (entry->kind) {
    case GlobalKind::kOrderedDict:
      return CallOrderedDict(args);
    case GlobalKind::kRebuildTensorV2:
      return RebuildTensor(args);
    case GlobalKind::kRebuildParameter:
      return RebuildParameter(args);
    case GlobalKind::kStorageType:
      break;
  }
  return Refuse(absl::StrCat("calling ", callable.DebugString()));
}

absl::StatusOr<PyValue> PickleMachine::CallOrderedDict(const PyValue& args) {
  PyValue dict = NewDict();
  if (args.items().empty()) return dict;
  // OrderedDict([(key, value), ...]).
  if (args.items().size() == 1 &&
      (args.items()[0].is_list() || args.items()[0].is_tuple())) {
    for (const PyValue& pair : args.items()[0].items()) {
      if (!(pair.is_tuple() || pair.is_list()) || pair.items().size() != 2) {
        return Corrupt("OrderedDict() item is not a pair");
      }
      dict.SetItem(pair.items()[0], pair.items()[1]);
    }
    return dict;
  }
  return Refuse(absl::StrCat("OrderedDict called with ", args.DebugString()));
}

absl::StatusOr<std::vector<int64_t>> PickleMachine::IntTuple(
    const PyValue& value, absl::string_view what) {
  if (!value.is_tuple() && !value.is_list()) {
    return Corrupt(absl::StrCat("tensor ", what, " is ", value.DebugString()));
  }
  if (value.items().size() > kMaxTensorDims) {
    return Corrupt(absl::StrCat("tensor has ", value.items().size(), " dims"));
  }
  std::vector<int64_t> out;
  out.reserve(value.items().size());
  for (const PyValue& item : value.items()) {
    if (!item.is_int() || item.as_int() < 0) {
      return Corrupt(
          absl::StrCat("tensor ", what, " holds ", item.DebugString()));
    }
    out.push_back(item.as_int());
  }
  return out;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//                    backward_hooks[, metadata]): a strided view of a storage.
absl::StatusOr<PyValue> PickleMachine::RebuildTensor(const PyValue& args) {
  const std::vector<PyValue>& a = args.items();
  if (a.size() != 6 && a.size() != 7) {
    return Corrupt(absl::StrCat(
        "_rebuild_tensor_v2 takes 6 or 7 arguments, got ", a.size()));
  }
  if (!a[0].is_storage() || !a[0].as_tensor().defined()) {
    return Corrupt(
        absl::StrCat("_rebuild_tensor_v2 storage is ", a[0].DebugString()));
  }
  if (!a[1].is_int() || a[1].as_int() < 0) {
    return Corrupt(absl::StrCat("storage offset is ", a[1].DebugString()));
  }
  OCLIP_ASSIGN_OR_RETURN(std::vector<int64_t> size, IntTuple(a[2], "size"));
  OCLIP_ASSIGN_OR_RETURN(std::vector<int64_t> stride, IntTuple(a[3], "stride"));
  if (size.size() != stride.size()) {
    return Corrupt(absl::StrCat("tensor size has ", size.size(),
                                " dims but stride has ", stride.size()));
  }
  const torch::Tensor& flat = a[0].as_tensor();
  const int64_t offset = a[1].as_int();
  const int64_t storage_numel =
      static_cast<int64_t>(flat.storage().nbytes() / flat.element_size());

  // The view must stay inside the storage: offset + sum((size-1)*stride) <
  // numel, computed without overflow.
  bool empty = false;
  for (int64_t s : size) empty |= (s == 0);
  int64_t last = offset;
  bool overflow = false;
  if (!empty) {
    for (size_t i = 0; i < size.size(); ++i) {
      int64_t step;
      overflow |= __builtin_mul_overflow(size[i] - 1, stride[i], &step);
      overflow |= __builtin_add_overflow(last, step, &last);
    }
  }
  if (overflow || (empty ? offset > storage_numel : last >= storage_numel)) {
    return Corrupt(absl::StrCat(
        "tensor view (offset ", offset, ", size [", absl::StrJoin(size, ", "),
        "], stride [", absl::StrJoin(stride, ", "),
        "]) exceeds its storage of ", storage_numel, " elements"));
  }
  torch::Tensor tensor = torch::empty({0}, flat.options());
  tensor.set_(flat.storage(), offset, size, stride);
  return PyValue::Tensor(std::move(tensor));
}

// _rebuild_parameter(data, requires_grad, backward_hooks): the data suffices.
absl::StatusOr<PyValue> PickleMachine::RebuildParameter(const PyValue& args) {
  const std::vector<PyValue>& a = args.items();
  if (a.size() != 3 || !a[0].is_tensor()) {
    return Corrupt(
        absl::StrCat("_rebuild_parameter arguments are ", args.DebugString()));
  }
  return a[0];
}

absl::Status PickleMachine::CheckShape(const PyValue& root) {
  if (!IsContainer(root)) return absl::OkStatus();
  const size_t max_depth = static_cast<size_t>(std::max(options_.max_depth, 1));
  struct Frame {
    PyValue value;
    size_t next_child = 0;
    size_t height_below = 0;  // Of the deepest finished child.
  };
  std::unordered_set<const void*> on_path;
  std::vector<Frame> path;
  path.push_back({root});
  on_path.insert(root.container_id());
  // Iterative depth-first walk that expands each container once (DAGs share
  // subtrees) and keeps the path within max_depth. A container's height is
  // known once it is finished; reaching it again at level L makes the tree
  // L + height deep.
  while (!path.empty()) {
    Frame& frame = path.back();
    if (frame.next_child < ChildCount(frame.value)) {
      const PyValue& child = Child(frame.value, frame.next_child++);
      if (!IsContainer(child)) continue;
      const void* id = child.container_id();
      size_t child_height = 0;
      if (auto it = heights_.find(id); it != heights_.end()) {
        child_height = it->second;
      } else if (on_path.count(id)) {
        return Corrupt("the object contains a reference cycle");
      } else {
        child_height = 1;  // At least; checked again when it is finished.
      }
      if (path.size() + child_height > max_depth) {
        return Corrupt(
            absl::StrCat("containers nested deeper than ", max_depth));
      }
      if (heights_.count(id)) {
        frame.height_below = std::max(frame.height_below, child_height);
        continue;
      }
      on_path.insert(id);
      path.push_back({child});  // Invalidates `frame`.
      continue;
    }
    const size_t height = frame.height_below + 1;
    const void* id = frame.value.container_id();
    on_path.erase(id);
    heights_[id] = height;
    path.pop_back();
    if (!path.empty()) {
      path.back().height_below = std::max(path.back().height_below, height);
    }
  }
  return absl::OkStatus();
}

}  // namespace internal

absl::StatusOr<PyValue> Unpickle(absl::Span<const uint8_t> data,
                                 const UnpickleOptions& options) {
  try {
    internal::PickleMachine machine(data, options);
    return machine.Run();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory while unpickling ", options.source_name));
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(
        "failed to unpickle ", options.source_name, ": ", e.what()));
  }
}

}  // namespace oclip
