#include "cli/model_flags.h"

#include <algorithm>
#include <thread>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "model/model_loader.h"
#include "model/tokenizer/load_tokenizer.h"

namespace oclip::cli {

void ModelFlags::Register(FlagSet& flags) {
  flags.AddString("model", &model,
                  "model config: a name from `oclip models` or a JSON config path");
  flags.AddString("pretrained", &pretrained,
                  "checkpoint file (.safetensors, .bin, .pt), a pretrained tag of the model "
                  "(see `oclip models`; downloaded into $OCLIP_CACHE), or \"random\"");
  flags.AddString("tokenizer", &tokenizer,
                  "tokenizer files: bpe_simple_vocab_16e6.txt.gz, or a directory with "
                  "vocab.json + merges.txt or sentencepiece.bpe.model (default: downloaded)");
  flags.AddInt("threads", &threads, "CPU threads (default: all cores)");
  flags.AddInt("seed", &seed, "seed of --pretrained random (default 0)");
}

absl::StatusOr<std::shared_ptr<ClipModel>> ModelFlags::LoadModel() const {
  if (pretrained.empty()) {
    return absl::InvalidArgumentError("--pretrained is required (a checkpoint file or \"random\")");
  }
  torch::set_num_threads(threads > 0
                             ? static_cast<int>(threads)
                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  LoadModelOptions options;
  options.model = model;
  options.pretrained = pretrained;
  options.seed = static_cast<uint64_t>(seed);
  return oclip::LoadModel(options);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> ModelFlags::LoadTokenizer(
    const ModelConfig& config) const {
  return LoadOrFetchTokenizer(config, tokenizer);
}

PreprocessOptions ModelFlags::Preprocessing(const ModelConfig& config) const {
  PreprocessOptions options;
  options.image_size = config.vision.image_size;
  options.mean = config.image_mean;
  options.std = config.image_std;
  return options;
}

void PrecisionFlag::Register(FlagSet& flags) {
  flags.AddString("precision", &value,
                  "model precision on the CPU: fp32 (default), bf16 or int8 (dynamic "
                  "quantization)");
}

absl::StatusOr<InferencePrecision> PrecisionFlag::Parse() const {
  absl::StatusOr<InferencePrecision> precision = ParseInferencePrecision(value);
  if (!precision.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--precision: ", precision.status().message()));
  }
  if (absl::Status on_cpu = CheckPrecisionOnDevice(*precision, torch::Device(torch::kCPU));
      !on_cpu.ok()) {
    return absl::Status(on_cpu.code(), absl::StrCat("--precision: ", on_cpu.message()));
  }
  return *precision;
}

absl::StatusOr<PreparedKernels> PrecisionFlag::Prepare(ClipModel& model) const {
  OCLIP_ASSIGN_OR_RETURN(const InferencePrecision precision, Parse());
  return PrepareForInference(model, precision);
}

absl::StatusOr<std::vector<std::string>> CollectTexts(const std::vector<std::string>& texts,
                                                      const std::string& texts_file) {
  std::vector<std::string> all = texts;
  if (!texts_file.empty()) {
    OCLIP_ASSIGN_OR_RETURN(std::string content, ReadFileToString(texts_file));
    if (!content.empty() && content.back() == '\n') content.pop_back();
    for (absl::string_view line : absl::StrSplit(content, '\n')) {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      all.emplace_back(line);
    }
  }
  return all;
}

}  // namespace oclip::cli
