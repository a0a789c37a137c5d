// `oclip classify`: zero-shot labels for images, OpenCLIP-style.

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "absl/strings/str_format.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/status.h"
#include "model/image/preprocess.h"
#include "model/zero_shot.h"

namespace oclip::cli {
namespace {

struct ClassifyFlags {
  ModelFlags model;
  PrecisionFlag precision;
  std::vector<std::string> images;
  std::vector<std::string> labels;
  std::string templates_file;
  int64_t top_k = 5;
  bool json = false;
};

absl::Status Classify(const ClassifyFlags& flags) {
  if (flags.images.empty()) return absl::InvalidArgumentError("give at least one --image");
  if (flags.labels.size() < 2) return absl::InvalidArgumentError("give at least two --label");
  if (flags.top_k < 1) return absl::InvalidArgumentError("--top-k must be >= 1");
  std::vector<std::string> templates = {kDefaultTemplate};
  if (!flags.templates_file.empty()) {
    OCLIP_ASSIGN_OR_RETURN(templates, ReadTemplateFile(flags.templates_file));
  }
  OCLIP_RETURN_IF_ERROR(flags.precision.Parse().status());
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, flags.model.LoadModel());
  OCLIP_RETURN_IF_ERROR(flags.precision.Prepare(*model).status());
  OCLIP_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                         flags.model.LoadTokenizer(model->config()));
  torch::InferenceMode inference;
  OCLIP_ASSIGN_OR_RETURN(torch::Tensor classifier,
                         BuildZeroShotClassifier(*model, *tokenizer, flags.labels, templates));

  const PreprocessOptions preprocess = flags.model.Preprocessing(model->config());
  const int64_t n = static_cast<int64_t>(flags.images.size()), s = preprocess.image_size;
  torch::Tensor batch = torch::empty({n, 3, s, s});
  for (int64_t i = 0; i < n; ++i) {
    OCLIP_RETURN_IF_ERROR(
        PreprocessImageFile(flags.images[i], preprocess, batch[i].data_ptr<float>()));
  }
  OCLIP_ASSIGN_OR_RETURN(torch::Tensor features, model->EncodeImage(batch));
  torch::Tensor probs =
      ZeroShotProbabilities(features, classifier, model->logit_scale()).to(torch::kCPU);
  const int64_t k = std::min<int64_t>(flags.top_k, static_cast<int64_t>(flags.labels.size()));
  auto [top_probs, top_index] = probs.topk(k, /*dim=*/1);

  nlohmann::json results = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    nlohmann::json ranked = nlohmann::json::array();
    if (!flags.json) std::cout << flags.images[i] << "\n";
    for (int64_t j = 0; j < k; ++j) {
      const std::string& label = flags.labels[top_index[i][j].item<int64_t>()];
      const double p = top_probs[i][j].item<double>();
      ranked.push_back({{"label", label}, {"probability", p}});
      if (!flags.json) std::cout << absl::StrFormat("  %8.4f  %s\n", p, label);
    }
    results.push_back({{"image", flags.images[i]}, {"labels", ranked}});
  }
  if (flags.json) std::cout << results.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunClassify(int argc, char** argv) {
  ClassifyFlags values;
  FlagSet flags("classify",
                "Zero-shot classification: probabilities of each --label for each image,\n"
                "from prompts built with the templates (default \"a photo of a {}.\").");
  values.model.Register(flags);
  values.precision.Register(flags);
  flags.AddRepeated("image", &values.images, "image file to classify");
  flags.AddRepeated("label", &values.labels, "candidate class name");
  flags.AddString("templates", &values.templates_file,
                  "file of prompt templates, one per line, each with {} for the label");
  flags.AddInt("top-k", &values.top_k, "labels shown per image (default 5)");
  flags.AddBool("json", &values.json, "print one JSON array instead of text");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  if (absl::Status status = Classify(values); !status.ok()) {
    std::cerr << "oclip classify: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
