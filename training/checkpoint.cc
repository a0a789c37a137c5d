#include "training/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "model/checkpoint/checkpoint.h"

namespace oclip {
namespace {

constexpr char kModelSuffix[] = ".safetensors";
constexpr char kStateSuffix[] = ".state.safetensors";

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<DType> ToDType(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat:
      return DType::kF32;
    case torch::kLong:
      return DType::kI64;
    case torch::kDouble:
      return DType::kF64;
    default:
      return absl::InternalError(absl::StrCat("cannot save dtype ", c10::toString(type)));
  }
}

// Keeps CPU copies alive while WriteSafetensors reads them.
absl::Status WriteTensors(const std::string& path,
                          const std::vector<std::pair<std::string, torch::Tensor>>& named,
                          const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, tensor] : named) {
    torch::Tensor t = tensor.detach().cpu();
    if (t.is_floating_point() && t.scalar_type() != torch::kDouble) t = t.to(torch::kFloat);
    t = t.contiguous();
    keep.push_back(t);
    OCLIP_ASSIGN_OR_RETURN(DType dtype, ToDType(t.scalar_type()));
    tensors.push_back({name, dtype, t.sizes().vec(),
                       absl::Span<const uint8_t>(static_cast<const uint8_t*>(t.data_ptr()),
                                                 t.numel() * t.element_size())});
  }
  return WriteSafetensors(path, tensors, metadata);
}

absl::StatusOr<torch::Tensor> ToTensor(const TensorView& view, const std::string& key) {
  torch::ScalarType type;
  switch (view.dtype) {
    case DType::kF32:
      type = torch::kFloat;
      break;
    case DType::kI64:
      type = torch::kLong;
      break;
    case DType::kF64:
      type = torch::kDouble;
      break;
    default:
      return absl::DataLossError(absl::StrCat("unexpected dtype of ", key));
  }
  torch::Tensor out = torch::empty(view.shape, torch::TensorOptions().dtype(type));
  std::memcpy(out.data_ptr(), view.data, view.size_bytes);
  return out;
}

absl::StatusOr<int64_t> MetadataInt(const std::map<std::string, std::string>& metadata,
                                    const std::string& key, const std::string& path) {
  auto it = metadata.find(key);
  int64_t value;
  if (it == metadata.end() || !absl::SimpleAtoi(it->second, &value)) {
    return absl::DataLossError(absl::StrCat(path, ": metadata '", key, "' missing or malformed"));
  }
  return value;
}

// The epoch recorded in a model file's metadata, or -1.
int64_t ModelFileEpoch(const std::string& path) {
  auto reader = SafetensorsReader::Open(path);
  if (!reader.ok()) return -1;
  auto epoch = MetadataInt((*reader)->metadata(), "epoch", path);
  return epoch.ok() ? *epoch : -1;
}

int64_t StateFileEpoch(const std::string& path) { return ModelFileEpoch(path); }

bool CompletePair(const std::string& dir, const std::string& basename) {
  const std::string model = ModelCheckpointPath(dir, basename);
  const std::string state = StateCheckpointPath(dir, basename);
  if (!FileExists(model) || !FileExists(state)) return false;
  const int64_t epoch = ModelFileEpoch(model);
  return epoch >= 0 && epoch == StateFileEpoch(state);
}

}  // namespace

std::string ModelCheckpointPath(const std::string& dir, const std::string& basename) {
  return absl::StrCat(dir, "/", basename, kModelSuffix);
}

std::string StateCheckpointPath(const std::string& dir, const std::string& basename) {
  return absl::StrCat(dir, "/", basename, kStateSuffix);
}

absl::Status SaveTrainingCheckpoint(const std::string& dir, const std::string& basename,
                                    ClipModel& model, const AdamW& optimizer,
                                    const TrainingState& state) {
  const std::map<std::string, std::string> metadata = {{"format", "oclip-training-checkpoint"},
                                                       {"epoch", absl::StrCat(state.epoch)},
                                                       {"step", absl::StrCat(state.step)},
                                                       {"name", state.name},
                                                       {"model", state.model}};
  std::vector<std::pair<std::string, torch::Tensor>> optimizer_tensors;
  for (const auto& [key, tensor] : optimizer.StateDict()) {
    optimizer_tensors.emplace_back("optimizer/" + key, tensor);
  }
  std::map<std::string, std::string> state_metadata = metadata;
  if (state.scaler_scale > 0) {
    state_metadata["scaler_scale"] = absl::StrFormat("%.17g", state.scaler_scale);
    state_metadata["scaler_growth_tracker"] = absl::StrCat(state.scaler_growth_tracker);
  }
  OCLIP_RETURN_IF_ERROR(
      WriteTensors(StateCheckpointPath(dir, basename), optimizer_tensors, state_metadata));
  std::vector<std::pair<std::string, torch::Tensor>> model_tensors;
  for (const auto& item : model.named_parameters())
    model_tensors.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_buffers())
    model_tensors.emplace_back(item.key(), item.value());
  return WriteTensors(ModelCheckpointPath(dir, basename), model_tensors, metadata);
}

absl::StatusOr<std::string> FindLatestCheckpoint(const std::string& dir) {
  if (CompletePair(dir, "epoch_latest")) return ModelCheckpointPath(dir, "epoch_latest");
  DIR* handle = ::opendir(dir.c_str());
  if (handle == nullptr) return ErrnoToStatus(errno, absl::StrCat("listing ", dir));
  int64_t best = -1;
  while (struct dirent* entry = ::readdir(handle)) {
    absl::string_view name = entry->d_name;
    if (!absl::ConsumePrefix(&name, "epoch_") || !absl::ConsumeSuffix(&name, kStateSuffix)) {
      continue;
    }
    int64_t epoch;
    if (absl::SimpleAtoi(name, &epoch) && epoch > best &&
        CompletePair(dir, absl::StrCat("epoch_", epoch))) {
      best = epoch;
    }
  }
  ::closedir(handle);
  if (best < 0) return absl::NotFoundError(absl::StrCat("no complete checkpoint in ", dir));
  return ModelCheckpointPath(dir, absl::StrCat("epoch_", best));
}

absl::StatusOr<TrainingState> LoadTrainingCheckpoint(const std::string& path, ClipModel& model,
                                                     AdamW* optimizer) {
  TrainingState state;
  absl::string_view stem = path;
  const std::string state_path =
      absl::ConsumeSuffix(&stem, kModelSuffix) ? absl::StrCat(stem, kStateSuffix) : "";
  const bool has_state = !state_path.empty() && FileExists(state_path);
  if (!has_state) {
    OCLIP_RETURN_IF_ERROR(LoadCheckpoint(model, path));
    return state;
  }
  // Everything is checked before the model or the optimizer is touched.
  OCLIP_ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(state_path));
  const auto& metadata = reader->metadata();
  OCLIP_ASSIGN_OR_RETURN(state.epoch, MetadataInt(metadata, "epoch", state_path));
  OCLIP_ASSIGN_OR_RETURN(state.step, MetadataInt(metadata, "step", state_path));
  if (ModelFileEpoch(path) != state.epoch) {
    return absl::DataLossError(
        absl::StrCat(path, " and ", state_path, " belong to different epochs (interrupted save?)"));
  }
  if (auto it = metadata.find("name"); it != metadata.end()) state.name = it->second;
  if (auto it = metadata.find("model"); it != metadata.end()) state.model = it->second;
  if (auto it = metadata.find("scaler_scale"); it != metadata.end()) {
    if (!absl::SimpleAtod(it->second, &state.scaler_scale) || !(state.scaler_scale > 0)) {
      return absl::DataLossError(absl::StrCat(state_path, ": metadata 'scaler_scale' malformed"));
    }
    OCLIP_ASSIGN_OR_RETURN(state.scaler_growth_tracker,
                           MetadataInt(metadata, "scaler_growth_tracker", state_path));
  }
  std::map<std::string, torch::Tensor> tensors;
  for (const std::string& key : reader->names()) {
    absl::string_view rest = key;
    if (!absl::ConsumePrefix(&rest, "optimizer/")) continue;
    OCLIP_ASSIGN_OR_RETURN(TensorView view, reader->Get(key));
    OCLIP_ASSIGN_OR_RETURN(tensors[std::string(rest)], ToTensor(view, key));
  }
  OCLIP_RETURN_IF_ERROR(LoadCheckpoint(model, path));
  if (optimizer != nullptr) {
    absl::Status loaded = optimizer->LoadStateDict(tensors);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(state_path, ": ", loaded.message()));
    }
  }
  return state;
}

}  // namespace oclip
