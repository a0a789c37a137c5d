// `oclip encode`: features of images and texts, written as .npy files.

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <iostream>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/npy.h"
#include "core/status.h"
#include "model/image/preprocess.h"

namespace oclip::cli {
namespace {

struct EncodeFlags {
  ModelFlags model;
  PrecisionFlag precision;
  std::vector<std::string> images;
  std::vector<std::string> texts;
  std::string texts_file;
  std::string output;
  bool normalize = false;
  int64_t batch_size = 32;
};

absl::Status MakeDirectory(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--output ", path, " is not a directory"));
}

// Runs `encode_batch(begin, count)` over [0, n) in batches and stacks the
// [count, D] results into one row-major float matrix.
template <typename EncodeBatch>
absl::StatusOr<std::vector<float>> EncodeInBatches(int64_t n, int64_t batch_size, int64_t* dim,
                                                   EncodeBatch encode_batch) {
  std::vector<float> rows;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t count = std::min(batch_size, n - begin);
    OCLIP_ASSIGN_OR_RETURN(torch::Tensor out, encode_batch(begin, count));
    out = out.to(torch::kCPU, torch::kFloat).contiguous();
    *dim = out.size(1);
    rows.insert(rows.end(), out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
  }
  return rows;
}

absl::Status Encode(const EncodeFlags& flags) {
  if (flags.output.empty()) return absl::InvalidArgumentError("--output is required");
  OCLIP_ASSIGN_OR_RETURN(std::vector<std::string> texts,
                         CollectTexts(flags.texts, flags.texts_file));
  if (flags.images.empty() && texts.empty()) {
    return absl::InvalidArgumentError("give at least one --image, --text or --texts-file");
  }
  if (flags.batch_size < 1) return absl::InvalidArgumentError("--batch-size must be >= 1");
  OCLIP_RETURN_IF_ERROR(flags.precision.Parse().status());
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, flags.model.LoadModel());
  OCLIP_RETURN_IF_ERROR(flags.precision.Prepare(*model).status());
  std::unique_ptr<Tokenizer> tokenizer;
  if (!texts.empty()) {
    OCLIP_ASSIGN_OR_RETURN(tokenizer, flags.model.LoadTokenizer(model->config()));
  }
  OCLIP_RETURN_IF_ERROR(MakeDirectory(flags.output));
  torch::InferenceMode inference;

  // Everything is computed before anything is written, so a bad input leaves
  // earlier outputs in --output untouched.
  int64_t image_dim = 0, text_dim = 0;
  const PreprocessOptions preprocess = flags.model.Preprocessing(model->config());
  const int64_t s = preprocess.image_size;
  OCLIP_ASSIGN_OR_RETURN(
      std::vector<float> image_rows,
      EncodeInBatches(static_cast<int64_t>(flags.images.size()), flags.batch_size, &image_dim,
                      [&](int64_t begin, int64_t count) -> absl::StatusOr<torch::Tensor> {
                        torch::Tensor batch = torch::empty({count, 3, s, s});
                        for (int64_t i = 0; i < count; ++i) {
                          OCLIP_RETURN_IF_ERROR(PreprocessImageFile(
                              flags.images[begin + i], preprocess, batch[i].data_ptr<float>()));
                        }
                        return model->EncodeImage(batch, flags.normalize);
                      }));
  OCLIP_ASSIGN_OR_RETURN(
      std::vector<float> text_rows,
      EncodeInBatches(static_cast<int64_t>(texts.size()), flags.batch_size, &text_dim,
                      [&](int64_t begin, int64_t count) -> absl::StatusOr<torch::Tensor> {
                        std::vector<int64_t> ids = tokenizer->Tokenize(
                            absl::MakeConstSpan(texts).subspan(begin, count));
                        torch::Tensor tokens =
                            torch::from_blob(ids.data(), {count, tokenizer->context_length()},
                                             torch::kLong)
                                .clone();
                        return model->EncodeText(tokens, flags.normalize);
                      }));
  if (!flags.images.empty()) {
    const std::string path = flags.output + "/image_features.npy";
    const int64_t n = static_cast<int64_t>(flags.images.size());
    OCLIP_RETURN_IF_ERROR(WriteNpyFloat32(path, {n, image_dim}, image_rows));
    std::cout << "wrote " << path << " [" << n << ", " << image_dim << "]\n";
  }
  if (!texts.empty()) {
    const std::string path = flags.output + "/text_features.npy";
    const int64_t n = static_cast<int64_t>(texts.size());
    OCLIP_RETURN_IF_ERROR(WriteNpyFloat32(path, {n, text_dim}, text_rows));
    std::cout << "wrote " << path << " [" << n << ", " << text_dim << "]\n";
  }
  return absl::OkStatus();
}

}  // namespace

int RunEncode(int argc, char** argv) {
  EncodeFlags values;
  FlagSet flags("encode",
                "Encodes images and texts with a CLIP model and writes\n"
                "OUTPUT/image_features.npy and OUTPUT/text_features.npy (float32\n"
                "[N, embed_dim], rows in argument order).");
  values.model.Register(flags);
  values.precision.Register(flags);
  flags.AddRepeated("image", &values.images, "image file to encode");
  flags.AddRepeated("text", &values.texts, "text to encode");
  flags.AddString("texts-file", &values.texts_file, "file with one text per line to encode");
  flags.AddString("output", &values.output, "directory for the .npy files");
  flags.AddBool("normalize", &values.normalize, "L2-normalize the features");
  flags.AddInt("batch-size", &values.batch_size, "inputs per forward pass (default 32)");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  if (absl::Status status = Encode(values); !status.ok()) {
    std::cerr << "oclip encode: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
