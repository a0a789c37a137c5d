#include "model/zero_shot.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace oclip {
namespace {

namespace F = torch::nn::functional;

torch::Tensor Normalize(const torch::Tensor& x) {
  return F::normalize(x, F::NormalizeFuncOptions().dim(-1));
}

absl::Status CheckTemplates(const std::vector<std::string>& templates) {
  if (templates.empty()) return absl::InvalidArgumentError("no prompt templates");
  for (const std::string& t : templates) {
    if (t.find("{}") == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt template \"", t, "\" has no {} for the class name"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string FillTemplate(const std::string& prompt_template, const std::string& classname) {
  std::string out;
  size_t start = 0;
  for (size_t pos; (pos = prompt_template.find("{}", start)) != std::string::npos;
       start = pos + 2) {
    absl::StrAppend(&out, prompt_template.substr(start, pos - start), classname);
  }
  absl::StrAppend(&out, prompt_template.substr(start));
  return out;
}

absl::StatusOr<torch::Tensor> BuildZeroShotClassifier(
    ClipModel& model, const Tokenizer& tokenizer, const std::vector<std::string>& classnames,
    const std::vector<std::string>& templates, int classes_per_batch) {
  if (classnames.empty()) return absl::InvalidArgumentError("no class names");
  OCLIP_RETURN_IF_ERROR(CheckTemplates(templates));
  classes_per_batch = std::max(1, classes_per_batch);
  const int64_t num_templates = static_cast<int64_t>(templates.size());
  std::vector<torch::Tensor> class_embeddings;
  for (size_t begin = 0; begin < classnames.size(); begin += classes_per_batch) {
    const size_t end = std::min(classnames.size(), begin + classes_per_batch);
    std::vector<std::string> prompts;
    for (size_t c = begin; c < end; ++c) {
      for (const std::string& t : templates) prompts.push_back(FillTemplate(t, classnames[c]));
    }
    std::vector<int64_t> ids = tokenizer.Tokenize(prompts);
    torch::Tensor tokens =
        torch::from_blob(ids.data(),
                         {static_cast<int64_t>(prompts.size()), tokenizer.context_length()},
                         torch::kLong)
            .clone();
    OCLIP_ASSIGN_OR_RETURN(torch::Tensor features, model.EncodeText(tokens, /*normalize=*/true));
    torch::Tensor per_class = features.view({static_cast<int64_t>(end - begin), num_templates, -1})
                                  .mean(1);
    class_embeddings.push_back(Normalize(per_class));
  }
  return torch::cat(class_embeddings, 0).t().contiguous();
}

torch::Tensor ZeroShotProbabilities(const torch::Tensor& image_features,
                                    const torch::Tensor& classifier,
                                    const torch::Tensor& logit_scale) {
  torch::Tensor logits = logit_scale.exp() * torch::matmul(Normalize(image_features), classifier);
  return torch::softmax(logits, -1);
}

absl::StatusOr<std::vector<std::string>> ReadTemplateFile(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<std::string> templates;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    templates.emplace_back(line);
  }
  absl::Status status = CheckTemplates(templates);
  if (!status.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", status.message()));
  return templates;
}

}  // namespace oclip
