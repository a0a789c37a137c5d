// OpenCLIP's evaluations during training (training/zero_shot.py and
// train.py evaluate/get_clip_metrics), run on the master rank:
//   - zero-shot top-1/top-5 on an ImageFolder-style directory (class k is the
//     k-th class folder in sorted order, named by line k of a class-names
//     file), with the classifier of model/zero_shot.h over the templates;
//   - retrieval on the validation set: the contrastive loss per batch
//     (sample-weighted mean, "clip_val_loss"), and from the features of the
//     whole set, for image_to_text and text_to_image, the mean rank + 1, the
//     floor of the median rank + 1, and R@1/5/10.
// Metrics come back as name → value with OpenCLIP's key names.
//
// Errors: INVALID_ARGUMENT for inputs that do not fit (class-name count vs
// folders, no images), NOT_FOUND for missing paths, INTERNAL when LibTorch
// fails. The model is used under NoGradGuard in eval mode and put back in
// train mode afterwards.

#ifndef OCLIP_TRAINING_EVALUATION_H_
#define OCLIP_TRAINING_EVALUATION_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/clip_model.h"
#include "model/image/preprocess.h"
#include "model/tokenizer/tokenizer.h"
#include "training/data_pipeline.h"

namespace oclip {

using Metrics = std::map<std::string, double>;

struct ZeroShotOptions {
  std::string root;             // --imagenet-val
  std::string classnames_file;  // one class name per line, in folder order
  std::vector<std::string> templates;
  int64_t batch_size = 64;
  int workers = 4;
  PreprocessOptions preprocess;
  // Autocast dtype for the forward passes (kFloat: none).
  torch::ScalarType autocast = torch::kFloat;
};

// "imagenet-zeroshot-val-top1", "imagenet-zeroshot-val-top5".
absl::StatusOr<Metrics> EvaluateZeroShot(ClipModel& model, const Tokenizer& tokenizer,
                                         const ZeroShotOptions& options);

// Over every batch of `val` (an eval pipeline): clip_val_loss, num_samples,
// {image_to_text,text_to_image}_{mean_rank,median_rank,R@1,R@5,R@10}.
absl::StatusOr<Metrics> EvaluateRetrieval(ClipModel& model, DataPipeline& val,
                                          torch::ScalarType autocast = torch::kFloat);

// The retrieval metrics of one direction from logits [N, N] whose diagonal
// holds the true pairs; keys prefixed with `prefix` ("image_to_text").
void AddRankMetrics(const torch::Tensor& logits, const std::string& prefix, Metrics* metrics);

}  // namespace oclip

#endif  // OCLIP_TRAINING_EVALUATION_H_
