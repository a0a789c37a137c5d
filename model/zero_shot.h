// Zero-shot classification as OpenCLIP does it (build_zero_shot_classifier):
// for each class, the text embeddings of every prompt template filled with
// the class name are L2-normalized, averaged, and normalized again; the
// classifier is the matrix of those class embeddings. Image probabilities are
// softmax(exp(logit_scale) * normalize(image_features) @ classifier).
//
// Templates are Python format strings with one "{}" (e.g. "a photo of a {}.").
// Thread-compatible: uses the model read-only.

#ifndef OCLIP_MODEL_ZERO_SHOT_H_
#define OCLIP_MODEL_ZERO_SHOT_H_

#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "model/clip_model.h"
#include "model/tokenizer/tokenizer.h"

namespace oclip {

// oclip's default prompt when the user gives no templates.
inline constexpr char kDefaultTemplate[] = "a photo of a {}.";

// Every "{}" of `prompt_template` replaced by `classname`.
std::string FillTemplate(const std::string& prompt_template, const std::string& classname);

// INVALID_ARGUMENT for no classes, no templates, or a template without "{}".
// Returns float [embed_dim, num_classes] on the model's device.
absl::StatusOr<torch::Tensor> BuildZeroShotClassifier(
    ClipModel& model, const Tokenizer& tokenizer, const std::vector<std::string>& classnames,
    const std::vector<std::string>& templates, int classes_per_batch = 10);

// image_features [N, D] (unnormalized), classifier [D, C] -> probabilities [N, C].
torch::Tensor ZeroShotProbabilities(const torch::Tensor& image_features,
                                    const torch::Tensor& classifier,
                                    const torch::Tensor& logit_scale);

// Reads prompt templates, one per line (blank lines and lines starting with
// '#' skipped). INVALID_ARGUMENT if a template lacks "{}".
absl::StatusOr<std::vector<std::string>> ReadTemplateFile(const std::string& path);

}  // namespace oclip

#endif  // OCLIP_MODEL_ZERO_SHOT_H_
