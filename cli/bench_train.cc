// `oclip bench train`: samples per second of full training steps (forward
// of both towers, ClipLoss, backward, AdamW with OpenCLIP's groups, the
// logit_scale clamp) on random inputs, so the figure is the model's cost
// without data loading. One JSON object on stdout.

#include <torch/torch.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/bench_util.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/model_flags.h"
#include "core/status.h"
#include "training/clip_loss.h"
#include "training/optimizer.h"
#include "training/precision.h"

namespace oclip::cli {
namespace {

absl::Status BenchTrain(const ModelFlags& model_flags, int64_t batch, double seconds,
                        const std::string& precision_name) {
  namespace F = torch::nn::functional;
  if (model_flags.model.empty()) return absl::InvalidArgumentError("--model is required");
  OCLIP_ASSIGN_OR_RETURN(std::shared_ptr<ClipModel> model, model_flags.LoadModel());
  torch::Device device = torch::kCPU;
  if (torch::cuda::is_available()) {
    device = torch::Device(torch::kCUDA, 0);
    model->to(device);
  }
  OCLIP_ASSIGN_OR_RETURN(TrainPrecision precision, ParseTrainPrecision(precision_name, device));
  model->to(WeightDtype(precision));
  model->train();
  const int64_t s = model->config().vision.image_size;
  const torch::Tensor images = torch::randn({batch, 3, s, s}).to(device, WeightDtype(precision));
  const torch::Tensor tokens = BenchmarkTokens(model->config(), batch).to(device);
  AdamW optimizer(OpenClipParamGroups(*model, 0.2), AdamWOptions{1e-4, 0.9, 0.98, 1e-6});
  const auto normalize = F::NormalizeFuncOptions().dim(-1);
  auto step = [&]() -> absl::Status {
    optimizer.ZeroGrad();
    torch::Tensor loss;
    {
      AutocastGuard guard(AutocastDtype(precision), device);
      loss = ClipLoss(F::normalize(model->ImageForward(images), normalize),
                      F::normalize(model->TextForward(tokens), normalize),
                      model->logit_scale().exp(), {}, nullptr);
    }
    loss.backward();
    optimizer.Step();
    torch::Tensor scale = model->logit_scale();
    ClampLogitScale(scale);
    if (device.is_cuda()) torch::cuda::synchronize();
    return absl::OkStatus();
  };
  auto checked_step = [&]() -> absl::Status {
    try {
      return step();
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("training step failed: ", e.what()));
    }
  };
  int64_t steps = 0;
  OCLIP_ASSIGN_OR_RETURN(double rate, MeasureThroughput(seconds, batch, checked_step, &steps));
  nlohmann::json result = {{"benchmark", "train"},
                           {"model", model_flags.model},
                           {"precision", precision_name},
                           {"device", device.str()},
                           {"batch", batch},
                           {"threads", torch::get_num_threads()},
                           {"steps", steps},
                           {"seconds_per_step", static_cast<double>(batch) / rate},
                           {"samples_per_second", rate}};
  std::cout << result.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace

int RunBenchTrain(int argc, char** argv) {
  ModelFlags model_flags;
  model_flags.pretrained = "random";
  int64_t batch = 32, seconds = 10;
  std::string precision = "fp32";
  FlagSet flags("bench train",
                "Samples per second of full CLIP training steps (forward, ClipLoss, backward,\n"
                "AdamW) on random inputs; no data loading.");
  model_flags.Register(flags);
  flags.AddInt("batch", &batch, "batch size (default 32)");
  flags.AddString("precision", &precision, "fp32 (default), amp_bf16, pure_bf16");
  flags.AddInt("seconds", &seconds, "minimum measuring time (default 10)");
  if (std::optional<int> exit_code = flags.ParseCommandLine(argc, argv)) return *exit_code;
  absl::Status status = BenchTrain(model_flags, std::max<int64_t>(batch, 1),
                                   static_cast<double>(std::max<int64_t>(seconds, 0)), precision);
  if (!status.ok()) {
    std::cerr << "oclip bench train: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace oclip::cli
