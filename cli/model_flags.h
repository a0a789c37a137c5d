// The flags every model-using subcommand shares (--model, --pretrained,
// --tokenizer, --threads, --seed) and what they resolve to: a loaded model in
// eval mode, its tokenizer, and its preprocessing.

#ifndef OCLIP_CLI_MODEL_FLAGS_H_
#define OCLIP_CLI_MODEL_FLAGS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cli/flags.h"
#include "model/clip_model.h"
#include "model/image/preprocess.h"
#include "model/inference_precision.h"
#include "model/tokenizer/tokenizer.h"

namespace oclip::cli {

struct ModelFlags {
  std::string model;
  std::string pretrained;
  std::string tokenizer;
  int64_t threads = 0;
  int64_t seed = 0;

  void Register(FlagSet& flags);

  // Sets the LibTorch thread count (default: every core; LibTorch starts
  // with one here) and loads the model.
  absl::StatusOr<std::shared_ptr<ClipModel>> LoadModel() const;
  // --tokenizer, or the files next to a downloaded checkpoint.
  absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const ModelConfig& config) const;
  PreprocessOptions Preprocessing(const ModelConfig& config) const;
};

// --precision of the commands that run a model for inference on the CPU
// (encode, classify, embed): fp32 (the default), bf16 or int8, as
// model/inference_precision.h prepares them, so that every command computes
// the same features as `oclip serve` with the same precision.
struct PrecisionFlag {
  std::string value = "fp32";

  void Register(FlagSet& flags);
  // INVALID_ARGUMENT for an unknown name, FAILED_PRECONDITION for one the CPU
  // cannot run (fp16), each naming the flag. Cheap: check before loading.
  absl::StatusOr<InferencePrecision> Parse() const;
  // Parse(), then PrepareForInference.
  absl::StatusOr<PreparedKernels> Prepare(ClipModel& model) const;
};

// Texts from --text flags followed by the lines of --texts-file (one text
// per line, empty lines kept: an empty text is a valid input).
absl::StatusOr<std::vector<std::string>> CollectTexts(const std::vector<std::string>& texts,
                                                      const std::string& texts_file);

}  // namespace oclip::cli

#endif  // OCLIP_CLI_MODEL_FLAGS_H_
