#include "model/checkpoint/checkpoint.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <vector>

#include <torch/script.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "model/checkpoint/torch_archive.h"

namespace oclip {
namespace {

namespace F = torch::nn::functional;

// Error lists name at most this many keys of each kind.
constexpr size_t kMaxListedKeys = 8;

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// --- Format sniffing ----------------------------------------------------------

absl::StatusOr<std::string> ReadPrefix(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", path, " cannot be opened"));
  }
  std::string prefix(n, '\0');
  in.read(prefix.data(), static_cast<std::streamsize>(n));
  prefix.resize(static_cast<size_t>(in.gcount()));
  return prefix;
}

absl::StatusOr<CheckpointFormat> SniffFormat(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(std::string prefix, ReadPrefix(path, 9));
  if (prefix.size() >= 4 && prefix.compare(0, 4, "PK\x03\x04") == 0) {
    OCLIP_ASSIGN_OR_RETURN(bool torch_save, IsTorchSaveArchive(path));
    return torch_save ? CheckpointFormat::kTorchSave : CheckpointFormat::kTorchScript;
  }
  if (prefix.size() == 9 && prefix[8] == '{') return CheckpointFormat::kSafetensors;
  if (!prefix.empty() && static_cast<unsigned char>(prefix[0]) == 0x80) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", path,
        " is a legacy (pre-1.6) torch.save pickle; re-save it with a current PyTorch or "
        "convert it to safetensors"));
  }
  if (prefix.size() < 9) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path, " is empty or truncated"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "checkpoint ", path,
      " is neither safetensors, a torch.save archive nor a TorchScript archive"));
}

// --- Readers -------------------------------------------------------------------

torch::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF64: return torch::kDouble;
    case DType::kF32: return torch::kFloat;
    case DType::kF16: return torch::kHalf;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI64: return torch::kLong;
    case DType::kI32: return torch::kInt;
    case DType::kI16: return torch::kShort;
    case DType::kI8: return torch::kChar;
    case DType::kU8: return torch::kByte;
    case DType::kBool: return torch::kBool;
  }
  return torch::kFloat;
}

absl::StatusOr<StateDict> ReadSafetensors(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> unique_reader,
                         SafetensorsReader::Open(path));
  std::shared_ptr<SafetensorsReader> reader = std::move(unique_reader);
  StateDict out;
  for (const std::string& name : reader->names()) {
    OCLIP_ASSIGN_OR_RETURN(TensorView view, reader->Get(name));
    const auto options = torch::TensorOptions().dtype(ToScalarType(view.dtype));
    const size_t element = DTypeSize(view.dtype);
    if (reinterpret_cast<uintptr_t>(view.data) % element == 0) {
      // A view of the mapping that keeps the mapping alive.
      out[name] = torch::from_blob(
          const_cast<uint8_t*>(view.data), view.shape, [reader](void*) {}, options);
    } else {
      torch::Tensor copy = torch::empty(view.shape, options);
      std::memcpy(copy.data_ptr(), view.data, view.size_bytes);
      out[name] = copy;
    }
  }
  return out;
}

// A training checkpoint holds the weights under "state_dict"; a plain
// torch.save(model.state_dict()) is the dict itself.
absl::StatusOr<StateDict> StateDictFromPickle(const PyValue& root, const std::string& path) {
  const PyValue* dict = &root;
  if (root.is_dict()) {
    if (const PyValue* inner = root.Find("state_dict")) dict = inner;
  }
  if (!dict->is_dict()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", path, " holds no state dict (neither a dict of tensors nor a "
        "training checkpoint with a \"state_dict\" entry)"));
  }
  StateDict out;
  for (const auto& [key, value] : dict->dict_items()) {
    if (key.kind() != PyValue::Kind::kString || value.kind() != PyValue::Kind::kTensor) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint ", path, ": the state dict maps something other than a name to a tensor"));
    }
    out[key.as_string()] = value.as_tensor();
  }
  return out;
}

absl::StatusOr<StateDict> ReadTorchScript(const std::string& path) {
  try {
    torch::jit::Module module = torch::jit::load(path, torch::kCPU);
    StateDict out;
    for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.name] = p.value;
    for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.name] = b.value;
    return out;
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    return absl::DataLossError(
        absl::StrCat("checkpoint ", path, " is a corrupted TorchScript archive: ", what));
  }
}

// --- Normalization -------------------------------------------------------------

// Entries that are not weights: TorchScript archives carry the JIT attributes
// and the causal mask (a non-persistent buffer in Python, which a scripted
// module still lists); older transformers saved RoBERTa's position ids.
bool IsIgnoredKey(const std::string& key) {
  return key == "input_resolution" || key == "context_length" || key == "vocab_size" ||
         key == "attn_mask" || absl::EndsWith(key, ".attn_mask") ||
         key == "text.transformer.embeddings.position_ids";
}

void StripModulePrefix(StateDict& state_dict) {
  StateDict stripped;
  for (auto& [key, tensor] : state_dict) {
    stripped[absl::StartsWith(key, "module.") ? key.substr(7) : key] = std::move(tensor);
  }
  state_dict = std::move(stripped);
}

// OpenCLIP's resize_pos_embed: keep the class token, resample the square grid
// with antialiased bicubic interpolation.
absl::StatusOr<torch::Tensor> ResizeImagePositions(const torch::Tensor& old, int64_t rows,
                                                   const std::string& source) {
  const int64_t old_grid = static_cast<int64_t>(std::lround(std::sqrt(old.size(0) - 1)));
  const int64_t new_grid = static_cast<int64_t>(std::lround(std::sqrt(rows - 1)));
  if (old_grid * old_grid + 1 != old.size(0) || new_grid * new_grid + 1 != rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", source, ": visual.positional_embedding ", ShapeString(old.sizes()),
        " is not a square grid plus a class token"));
  }
  const int64_t width = old.size(1);
  torch::Tensor grid = old.slice(0, 1).to(torch::kFloat).reshape({1, old_grid, old_grid, width})
                           .permute({0, 3, 1, 2});
  grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{new_grid, new_grid})
                                  .mode(torch::kBicubic)
                                  .align_corners(false)
                                  .antialias(true));
  grid = grid.permute({0, 2, 3, 1}).reshape({new_grid * new_grid, width});
  return torch::cat({old.slice(0, 0, 1).to(torch::kFloat), grid}, 0).to(old.dtype());
}

// OpenCLIP's resize_text_pos_embed: linear interpolation along the positions.
torch::Tensor ResizeTextPositions(const torch::Tensor& old, int64_t rows) {
  torch::Tensor x = old.to(torch::kFloat).t().unsqueeze(0);  // [1, W, L]
  x = F::interpolate(x, F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{rows})
                            .mode(torch::kLinear)
                            .align_corners(false));
  return x.squeeze(0).t().contiguous().to(old.dtype());
}

absl::Status ResizePositionsIfNeeded(const ClipModel& model, StateDict& state_dict,
                                     const std::string& source) {
  const auto params = model.named_parameters();
  for (const char* key : {"visual.positional_embedding", "positional_embedding"}) {
    auto it = state_dict.find(key);
    const torch::Tensor* target = params.find(key);
    if (it == state_dict.end() || target == nullptr) continue;
    const torch::Tensor& old = it->second;
    if (old.dim() != 2 || target->dim() != 2 || old.size(1) != target->size(1) ||
        old.size(0) == target->size(0)) {
      continue;  // Equal, or a mismatch the strict check reports.
    }
    if (absl::StartsWith(key, "visual.")) {
      if (model.config().vision.is_resnet()) continue;
      OCLIP_ASSIGN_OR_RETURN(it->second, ResizeImagePositions(old, target->size(0), source));
    } else {
      it->second = ResizeTextPositions(old, target->size(0));
    }
  }
  return absl::OkStatus();
}

std::string ListKeys(const std::vector<std::string>& keys) {
  std::vector<std::string> shown(keys.begin(),
                                 keys.begin() + std::min(keys.size(), kMaxListedKeys));
  std::string out = absl::StrJoin(shown, ", ");
  if (keys.size() > shown.size()) absl::StrAppend(&out, ", ... (", keys.size(), " in all)");
  return out;
}

}  // namespace

const char* CheckpointFormatName(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::kSafetensors: return "safetensors";
    case CheckpointFormat::kTorchSave: return "torch.save archive";
    case CheckpointFormat::kTorchScript: return "TorchScript archive";
  }
  return "?";
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(CheckpointFormat format, SniffFormat(path));
  Checkpoint checkpoint{format, {}};
  switch (format) {
    case CheckpointFormat::kSafetensors: {
      OCLIP_ASSIGN_OR_RETURN(checkpoint.state_dict, ReadSafetensors(path));
      break;
    }
    case CheckpointFormat::kTorchSave: {
      OCLIP_ASSIGN_OR_RETURN(PyValue root, ReadTorchSaveArchive(path));
      OCLIP_ASSIGN_OR_RETURN(checkpoint.state_dict, StateDictFromPickle(root, path));
      break;
    }
    case CheckpointFormat::kTorchScript: {
      OCLIP_ASSIGN_OR_RETURN(checkpoint.state_dict, ReadTorchScript(path));
      break;
    }
  }
  return checkpoint;
}

absl::Status LoadStateDict(ClipModel& model, StateDict state_dict, const std::string& source) {
  StripModulePrefix(state_dict);
  for (auto it = state_dict.begin(); it != state_dict.end();) {
    it = IsIgnoredKey(it->first) ? state_dict.erase(it) : std::next(it);
  }
  try {
    OCLIP_RETURN_IF_ERROR(ResizePositionsIfNeeded(model, state_dict, source));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("resizing positional embeddings of ", source, ": ",
                                            e.what()));
  }

  // Everything the model holds that a checkpoint must provide.
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : model.named_parameters()) targets[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) targets[b.key()] = b.value();

  std::vector<std::string> missing, unexpected, mismatched;
  for (const auto& [key, target] : targets) {
    auto it = state_dict.find(key);
    if (it == state_dict.end()) {
      missing.push_back(key);
    } else if (!it->second.sizes().equals(target.sizes())) {
      mismatched.push_back(absl::StrCat(key, " ", ShapeString(it->second.sizes()), " vs model ",
                                        ShapeString(target.sizes())));
    } else if (target.is_floating_point() != it->second.is_floating_point()) {
      mismatched.push_back(absl::StrCat(key, " has dtype ", c10::toString(it->second.scalar_type())));
    }
  }
  for (const auto& [key, tensor] : state_dict) {
    if (targets.count(key) == 0) unexpected.push_back(key);
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    std::string message = absl::StrCat("checkpoint ", source, " does not fit model ",
                                       model.config().name, ":");
    if (!missing.empty()) {
      absl::StrAppend(&message, " missing keys (", missing.size(), "): ", ListKeys(missing), ";");
    }
    if (!unexpected.empty()) {
      absl::StrAppend(&message, " unexpected keys (", unexpected.size(), "): ",
                      ListKeys(unexpected), ";");
    }
    if (!mismatched.empty()) {
      absl::StrAppend(&message, " mis-shaped keys (", mismatched.size(), "): ",
                      ListKeys(mismatched), ";");
    }
    message.pop_back();
    return absl::InvalidArgumentError(message);
  }

  try {
    torch::NoGradGuard no_grad;
    for (auto& [key, target] : targets) target.copy_(state_dict.at(key));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("copying ", source, " into the model: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status LoadCheckpoint(ClipModel& model, const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(path));
  return LoadStateDict(model, std::move(checkpoint.state_dict), path);
}

absl::StatusOr<ModelConfig> InferConfigFromStateDict(const StateDict& state_dict) {
  auto shape = [&state_dict](const std::string& key) -> absl::StatusOr<at::IntArrayRef> {
    auto it = state_dict.find(key);
    if (it == state_dict.end()) {
      it = state_dict.find("module." + key);
      if (it == state_dict.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot infer the architecture: no ", key, " in the checkpoint"));
      }
    }
    return it->second.sizes();
  };
  // Number of distinct indices {i} among keys "<prefix>{i}.<suffix...>".
  auto count_indices = [&state_dict](const std::string& prefix) {
    std::set<int> indices;
    for (const auto& [raw_key, tensor] : state_dict) {
      std::string key = absl::StartsWith(raw_key, "module.") ? raw_key.substr(7) : raw_key;
      if (!absl::StartsWith(key, prefix)) continue;
      int index = 0;
      const std::string rest = key.substr(prefix.size());
      if (absl::SimpleAtoi(rest.substr(0, rest.find('.')), &index)) indices.insert(index);
    }
    return static_cast<int>(indices.size());
  };
  auto square_root = [](int64_t n) -> absl::StatusOr<int> {
    const int root = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n))));
    if (static_cast<int64_t>(root) * root != n) {
      return absl::InvalidArgumentError("cannot infer the architecture: non-square grid");
    }
    return root;
  };

  ModelConfig config;
  config.name = "inferred";
  config.quick_gelu = true;  // OpenAI's models were trained with QuickGELU.
  if (shape("visual.proj").ok()) {
    OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef conv1, shape("visual.conv1.weight"));
    OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef positions, shape("visual.positional_embedding"));
    OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef c_fc,
                           shape("visual.transformer.resblocks.0.mlp.c_fc.weight"));
    if (conv1.size() != 4 || positions.size() != 2 || c_fc.size() != 2) {
      return absl::InvalidArgumentError("cannot infer the architecture: odd ViT shapes");
    }
    OCLIP_ASSIGN_OR_RETURN(int grid, square_root(positions[0] - 1));
    config.vision.width = static_cast<int>(conv1[0]);
    config.vision.patch_size = static_cast<int>(conv1[3]);
    config.vision.image_size = config.vision.patch_size * grid;
    config.vision.layers = count_indices("visual.transformer.resblocks.");
    config.vision.mlp_ratio = static_cast<double>(c_fc[0]) / conv1[0];
  } else {
    OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef layer1, shape("visual.layer1.0.conv1.weight"));
    OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef positions,
                           shape("visual.attnpool.positional_embedding"));
    OCLIP_ASSIGN_OR_RETURN(int grid, square_root(positions[0] - 1));
    for (int stage = 1; stage <= 4; ++stage) {
      config.vision.resnet_layers.push_back(
          count_indices(absl::StrCat("visual.layer", stage, ".")));
    }
    config.vision.width = static_cast<int>(layer1[0]);
    config.vision.image_size = 32 * grid;
  }
  OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef projection, shape("text_projection"));
  OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef positions, shape("positional_embedding"));
  OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef tokens, shape("token_embedding.weight"));
  OCLIP_ASSIGN_OR_RETURN(at::IntArrayRef ln_final, shape("ln_final.weight"));
  config.embed_dim = static_cast<int>(projection[1]);
  config.text.context_length = static_cast<int>(positions[0]);
  config.text.vocab_size = static_cast<int>(tokens[0]);
  config.text.width = static_cast<int>(ln_final[0]);
  config.text.heads = std::max(1, config.text.width / 64);
  config.text.layers = count_indices("transformer.resblocks.");
  if (config.vision.layers == 0 && !config.vision.is_resnet()) {
    return absl::InvalidArgumentError("cannot infer the architecture: no vision blocks");
  }
  return config;
}

}  // namespace oclip
