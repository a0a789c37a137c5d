// A restricted Python pickle interpreter for PyTorch checkpoints.
//
// `torch.save` writes a pickle (protocol 2) that rebuilds dicts, lists, tuples,
// numbers, strings and tensors. Unpickle() runs the opcodes such pickles use
// and returns the resulting object as a PyValue tree. It is not a general
// unpickler: it calls nothing but a fixed whitelist of globals
// (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
// `torch._utils._rebuild_parameter` and the `torch.*Storage` types), because a
// pickle may name any Python callable (`posix.system`).
//
// Errors: a truncated or malformed pickle (bad opcode, stack underflow, bad
// memo index, a tensor view outside its storage, a reference cycle, nesting
// deeper than UnpickleOptions::max_depth) is DATA_LOSS; a well-formed pickle
// that needs something this interpreter refuses (a global outside the
// whitelist, an opcode state dicts never use) is INVALID_ARGUMENT. Every
// message names UnpickleOptions::source_name and the byte offset. Nothing
// throws: LibTorch and allocation exceptions are caught at the boundary.
// Lengths read from the pickle are checked against the bytes that remain
// before anything is allocated, so a corrupted length cannot request a huge
// buffer; memory use is bounded by a small multiple of the pickle's size.
//
// Ownership and thread safety: a PyValue is a cheap handle. Copies of a list,
// tuple or dict share the container (as Python references do), tensors share
// their storage. A returned tree is never mutated again, so it may be read
// from several threads at once. The tree is acyclic and at most max_depth
// deep, so recursive traversal is safe.

#ifndef OCLIP_MODEL_CHECKPOINT_PICKLE_H_
#define OCLIP_MODEL_CHECKPOINT_PICKLE_H_

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace oclip {

namespace internal {
class PickleMachine;
}  // namespace internal

// A Python value as found in a checkpoint pickle.
class PyValue {
 public:
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,  // Python str (UTF-8 bytes), or a Python 2 str (BINSTRING).
    kBytes,   // Python bytes.
    kTensor,
    kList,
    kTuple,
    kDict,    // dict or collections.OrderedDict; insertion order kept.
    kGlobal,  // A whitelisted global that was not called (e.g. a storage type).
    kStorage,  // A torch storage: as_tensor() is a 1-D tensor over all of it.
  };
  using DictItems = std::vector<std::pair<PyValue, PyValue>>;

  PyValue() = default;  // None.

  static PyValue None() { return PyValue(); }
  static PyValue Bool(bool value);
  static PyValue Int(int64_t value);
  static PyValue Float(double value);
  static PyValue String(std::string value);
  static PyValue Bytes(std::string value);
  static PyValue Tensor(torch::Tensor value);
  static PyValue List(std::vector<PyValue> items = {});
  static PyValue Tuple(std::vector<PyValue> items = {});
  // Later duplicates of a str/bytes/int/bool key replace the earlier value in
  // place, as in Python.
  static PyValue Dict(DictItems items = {});
  // `flat`: a contiguous 1-D CPU tensor over a whole storage (storage offset
  // 0), as a persistent_load callback returns it for `_rebuild_tensor_v2`.
  static PyValue Storage(torch::Tensor flat);

  Kind kind() const { return kind_; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_bytes() const { return kind_ == Kind::kBytes; }
  bool is_tensor() const { return kind_ == Kind::kTensor; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kTuple; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_global() const { return kind_ == Kind::kGlobal; }
  bool is_storage() const { return kind_ == Kind::kStorage; }

  // Accessors return a zero value (false, 0, "", an undefined tensor, an empty
  // container) when the kind does not match; check kind() first.
  // as_int() also accepts a bool; as_float() also accepts an int or a bool.
  bool as_bool() const;
  int64_t as_int() const;
  double as_float() const;
  // kString, kBytes, and kGlobal ("module.name").
  const std::string& as_string() const;
  // kTensor, and kStorage (a 1-D view over the whole storage).
  const torch::Tensor& as_tensor() const;
  // kList and kTuple.
  const std::vector<PyValue>& items() const;
  // kDict, in insertion order.
  const DictItems& dict_items() const;

  // Dict lookup by a str key / an int key; nullptr if absent or not a dict.
  const PyValue* Find(const std::string& key) const;
  const PyValue* FindInt(int64_t key) const;

  // A short description for messages and test failures: the kind, and for
  // scalars the value (containers show their size, tensors dtype and shape).
  std::string DebugString() const;

 private:
  friend class internal::PickleMachine;

  struct DictData {
    DictItems items;
    // Keys of hashable scalar kinds (str, bytes, int, bool), encoded by
    // IndexKey(), to their position in `items`.
    std::unordered_map<std::string, size_t> index;
  };

  static PyValue Global(std::string qualified_name);
  static std::optional<std::string> IndexKey(const PyValue& key);

  // Mutation, for the interpreter only (Python containers are built in place
  // after they are created and memoized).
  std::vector<PyValue>* mutable_items() const { return items_.get(); }
  void SetItem(PyValue key, PyValue value) const;
  // Drops every child so that destroying the container cannot recurse.
  void ClearChildren() const;
  const void* container_id() const;

  Kind kind_ = Kind::kNone;
  int64_t int_ = 0;  // kBool, kInt.
  double float_ = 0;
  std::shared_ptr<const std::string> string_;    // kString, kBytes, kGlobal.
  torch::Tensor tensor_;                         // kTensor, kStorage.
  std::shared_ptr<std::vector<PyValue>> items_;  // kList, kTuple.
  std::shared_ptr<DictData> dict_;               // kDict.
};

const char* PyValueKindName(PyValue::Kind kind);

// If `value` is one of the whitelisted `torch.*Storage` globals, its element
// type (FloatStorage -> kFloat, ...).
std::optional<torch::ScalarType> StorageScalarType(const PyValue& value);

struct UnpickleOptions {
  // Names the pickle in error messages (e.g. "model.bin/data.pkl").
  std::string source_name = "<pickle>";
  // Resolves a persistent id (BINPERSID) to an object, normally a storage
  // made with PyValue::Storage(). Without one, BINPERSID is INVALID_ARGUMENT.
  // A non-OK status aborts unpickling and is returned as is.
  std::function<absl::StatusOr<PyValue>(const PyValue& persistent_id)>
      persistent_load;
  // Deepest container nesting accepted (a state dict needs about 5).
  int max_depth = 100;
};

// Runs the pickle in `data` (protocol 0-5 framing; the binary opcodes of
// protocol 2-5) and returns the object it builds. See the file comment for
// errors. Tensors own (or share, through their storage) their memory; `data`
// may be freed afterwards.
absl::StatusOr<PyValue> Unpickle(absl::Span<const uint8_t> data,
                                 const UnpickleOptions& options);

}  // namespace oclip

#endif  // OCLIP_MODEL_CHECKPOINT_PICKLE_H_
