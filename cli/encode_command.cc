// `oclip encode`: image features of files, written as .npy.

#include <sys/stat.h>

#include <algorithm>
#include <iostream>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "core/npy.h"
#include "core/status.h"
#include "model/image/preprocess.h"
#include "model/model_loader.h"

namespace oclip::cli {
namespace {

struct EncodeFlags {
  std::string model;
  std::string pretrained;
  std::vector<std::string> images;
  std::string output;
  bool normalize = false;
  int64_t batch_size = 32;
  int64_t threads = 0;
  int64_t seed = 0;
};

absl::Status MakeDirectory(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--output ", path, " is not a directory"));
}

absl::Status Encode(const EncodeFlags& flags) {
  if (flags.pretrained.empty()) {
    return absl::InvalidArgumentError("--pretrained is required (a checkpoint file or \"random\")");
  }
  if (flags.output.empty()) return absl::InvalidArgumentError("--output is required");
  if (flags.images.empty()) return absl::InvalidArgumentError("give at least one --image");
  if (flags.batch_size < 1) return absl::InvalidArgumentError("--batch-size must be >= 1");
  // LibTorch starts with one thread here (PITFALLS.md): use every core.
  const int threads = flags.threads > 0
                          ? static_cast<int>(flags.threads)
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);

  OCLIP_RETURN_IF_ERROR(MakeDirectory(flags.output));
  LoadModelOptions load;
  load.model = flags.model;
  load.pretrained = flags.pretrained;
  load.seed = static_cast<uint64_t>(flags.seed);
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, LoadModel(load));

  PreprocessOptions preprocess;
  preprocess.image_size = model->config().vision.image_size;
  const int64_t s = preprocess.image_size;
  const int64_t n = static_cast<int64_t>(flags.images.size());
  torch::InferenceMode inference;
  std::vector<float> features;
  int64_t dim = 0;
  for (int64_t begin = 0; begin < n; begin += flags.batch_size) {
    const int64_t count = std::min(flags.batch_size, n - begin);
    torch::Tensor batch = torch::empty({count, 3, s, s});
    for (int64_t i = 0; i < count; ++i) {
      OCLIP_RETURN_IF_ERROR(PreprocessImageFile(flags.images[begin + i], preprocess,
                                                batch[i].data_ptr<float>()));
    }
    OCLIP_ASSIGN_OR_RETURN(torch::Tensor out, model->EncodeImage(batch, flags.normalize));
    out = out.to(torch::kCPU, torch::kFloat).contiguous();
    dim = out.size(1);
    features.insert(features.end(), out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
  }
  const std::string path = flags.output + "/image_features.npy";
  OCLIP_RETURN_IF_ERROR(WriteNpyFloat32(path, {n, dim}, features));
  std::cout << "wrote " << path << " [" << n << ", " << dim << "]\n";
  return absl::OkStatus();
}

}  // namespace

int RunEncode(int argc, char** argv) {
  EncodeFlags values;
  FlagSet flags("encode",
                "Encodes images with a CLIP model and writes OUTPUT/image_features.npy\n"
                "(float32 [N, embed_dim], rows in argument order).");
  flags.AddString("model", &values.model,
                  "model config: a name from `oclip models` or a JSON config path");
  flags.AddString("pretrained", &values.pretrained,
                  "checkpoint (.safetensors, .bin, .pt) or \"random\"");
  flags.AddRepeated("image", &values.images, "image file to encode");
  flags.AddString("output", &values.output, "directory for the .npy files");
  flags.AddBool("normalize", &values.normalize, "L2-normalize the features");
  flags.AddInt("batch-size", &values.batch_size, "images per forward pass (default 32)");
  flags.AddInt("threads", &values.threads, "CPU threads (default: all cores)");
  flags.AddInt("seed", &values.seed, "seed of --pretrained random (default 0)");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  if (absl::Status status = Encode(values); !status.ok()) {
    std::cerr << "oclip encode: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
