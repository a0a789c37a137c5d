#include "training/evaluation.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/mapped_file.h"
#include "core/status.h"
#include "data/image_folder.h"
#include "model/zero_shot.h"
#include "training/precision.h"

namespace oclip {
namespace {

// Puts the model in eval mode for a scope and back to train mode after.
class EvalModeScope {
 public:
  explicit EvalModeScope(ClipModel& model) : model_(model), was_training_(model.is_training()) {
    model_.eval();
  }
  ~EvalModeScope() { model_.train(was_training_); }

 private:
  ClipModel& model_;
  bool was_training_;
};

torch::Tensor Normalized(const torch::Tensor& features) {
  namespace F = torch::nn::functional;
  return F::normalize(features.to(torch::kFloat), F::NormalizeFuncOptions().dim(-1));
}

absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path) {
  OCLIP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripTrailingAsciiWhitespace(line);
    if (!line.empty()) lines.emplace_back(line);
  }
  return lines;
}

}  // namespace

void AddRankMetrics(const torch::Tensor& logits, const std::string& prefix, Metrics* metrics) {
  const int64_t n = logits.size(0);
  const torch::Tensor ranking = torch::argsort(logits, /*dim=*/1, /*descending=*/true);
  const torch::Tensor truth = torch::arange(n, torch::kLong).view({-1, 1});
  // The position of the true pair in each row's descending order.
  const torch::Tensor preds = torch::nonzero(ranking == truth).select(1, 1).to(torch::kDouble);
  (*metrics)[prefix + "_mean_rank"] = preds.mean().item<double>() + 1;
  (*metrics)[prefix + "_median_rank"] = std::floor(preds.median().item<double>()) + 1;
  for (int k : {1, 5, 10}) {
    (*metrics)[absl::StrCat(prefix, "_R@", k)] =
        (preds < k).to(torch::kDouble).mean().item<double>();
  }
}

absl::StatusOr<Metrics> EvaluateRetrieval(ClipModel& model, DataPipeline& val,
                                          torch::ScalarType autocast) {
  namespace F = torch::nn::functional;
  EvalModeScope eval(model);
  try {
    torch::NoGradGuard no_grad;
    OCLIP_RETURN_IF_ERROR(val.StartEpoch(0));
    std::vector<torch::Tensor> image_parts, text_parts;
    double loss_sum = 0;
    int64_t samples = 0;
    torch::Tensor scale;
    const torch::ScalarType weights = model.logit_scale().scalar_type();
    while (true) {
      Batch batch;
      OCLIP_ASSIGN_OR_RETURN(bool more, val.Next(&batch));
      if (!more) break;
      torch::Tensor image_features, text_features;
      {
        AutocastGuard guard(autocast, model.device());
        image_features = Normalized(model.ImageForward(batch.images.to(model.device(), weights)));
        text_features = Normalized(model.TextForward(batch.tokens.to(model.device())));
      }
      scale = model.logit_scale().exp().to(torch::kFloat).cpu();
      image_features = image_features.cpu();
      text_features = text_features.cpu();
      const torch::Tensor logits_per_image = scale * image_features.matmul(text_features.t());
      const torch::Tensor labels = torch::arange(batch.images.size(0), torch::kLong);
      const double loss = ((F::cross_entropy(logits_per_image, labels) +
                            F::cross_entropy(logits_per_image.t(), labels)) /
                           2)
                              .item<double>();
      loss_sum += loss * batch.images.size(0);
      samples += batch.images.size(0);
      image_parts.push_back(image_features);
      text_parts.push_back(text_features);
    }
    if (samples == 0) return absl::InvalidArgumentError("the validation set yielded no samples");
    Metrics metrics;
    const torch::Tensor all_image = torch::cat(image_parts), all_text = torch::cat(text_parts);
    const torch::Tensor logits = scale * all_image.matmul(all_text.t());
    AddRankMetrics(logits, "image_to_text", &metrics);
    AddRankMetrics(logits.t(), "text_to_image", &metrics);
    metrics["clip_val_loss"] = loss_sum / samples;
    metrics["num_samples"] = static_cast<double>(samples);
    return metrics;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("validation failed: ", e.what()));
  }
}

absl::StatusOr<Metrics> EvaluateZeroShot(ClipModel& model, const Tokenizer& tokenizer,
                                         const ZeroShotOptions& options) {
  OCLIP_ASSIGN_OR_RETURN(std::vector<std::string> classnames, ReadLines(options.classnames_file));
  ImageFolderOptions folder;
  folder.root = options.root;
  folder.read_captions = false;
  OCLIP_ASSIGN_OR_RETURN(auto source, ImageFolderSource::Create(folder));
  // torchvision's ImageFolder: classes are the sorted top-level folders.
  std::set<std::string> class_set;
  for (const std::string& file : source->files()) {
    const size_t slash = file.find('/');
    if (slash != std::string::npos) class_set.insert(file.substr(0, slash));
  }
  const std::vector<std::string> class_dirs(class_set.begin(), class_set.end());
  if (class_dirs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--imagenet-val ", options.root, " has no class folders with images"));
  }
  if (class_dirs.size() != classnames.size()) {
    return absl::InvalidArgumentError(absl::StrCat(options.root, " has ", class_dirs.size(),
                                                   " class folders but ", options.classnames_file,
                                                   " names ", classnames.size(), " classes"));
  }
  EvalModeScope eval(model);
  try {
    torch::NoGradGuard no_grad;
    torch::Tensor classifier;
    {
      AutocastGuard guard(options.autocast, model.device());
      OCLIP_ASSIGN_OR_RETURN(
          classifier, BuildZeroShotClassifier(model, tokenizer, classnames, options.templates));
    }
    classifier = classifier.to(torch::kFloat);
    const int64_t s = options.preprocess.image_size;
    const torch::ScalarType weights = model.logit_scale().scalar_type();
    int64_t top1 = 0, top5 = 0, total = 0;
    std::vector<int64_t> targets;
    torch::Tensor images = torch::empty({options.batch_size, 3, s, s});
    int64_t filled = 0;
    auto flush = [&]() -> absl::Status {
      if (filled == 0) return absl::OkStatus();
      torch::Tensor features;
      {
        AutocastGuard guard(options.autocast, model.device());
        features =
            Normalized(model.ImageForward(images.narrow(0, 0, filled).to(model.device(), weights)));
      }
      const torch::Tensor logits = 100.0 * features.matmul(classifier);
      const int64_t k = std::min<int64_t>(5, logits.size(1));
      const torch::Tensor pred = std::get<1>(logits.topk(k, 1)).cpu();
      const torch::Tensor target = torch::tensor(targets, torch::kLong).view({-1, 1});
      const torch::Tensor correct = pred == target;
      top1 += correct.narrow(1, 0, 1).sum().item<int64_t>();
      top5 += correct.sum().item<int64_t>();
      total += filled;
      filled = 0;
      targets.clear();
      return absl::OkStatus();
    };
    Sample sample;
    while (true) {
      OCLIP_ASSIGN_OR_RETURN(bool more, source->Next(&sample));
      if (!more) break;
      const size_t slash = sample.key.find('/');
      if (slash == std::string::npos) continue;  // Not inside a class folder.
      const int64_t label =
          std::lower_bound(class_dirs.begin(), class_dirs.end(), sample.key.substr(0, slash)) -
          class_dirs.begin();
      OCLIP_RETURN_IF_ERROR(
          PreprocessImageBytes(sample.image, options.preprocess, images[filled].data_ptr<float>()));
      targets.push_back(label);
      if (++filled == options.batch_size) OCLIP_RETURN_IF_ERROR(flush());
    }
    OCLIP_RETURN_IF_ERROR(flush());
    if (total == 0) return absl::InvalidArgumentError(absl::StrCat(options.root, ": no images"));
    return Metrics{{"imagenet-zeroshot-val-top1", static_cast<double>(top1) / total},
                   {"imagenet-zeroshot-val-top5", static_cast<double>(top5) / total}};
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("zero-shot evaluation failed: ", e.what()));
  }
}

}  // namespace oclip
