// The CPU inference precisions (model/inference_precision.h) against Python
// OpenCLIP's features on the tiny fixtures: the prepared fp32 path stays within
// the parity tolerance, bf16 and int8 within their stated feature cosines.
// The residual block's fused LayerNorms and epilogues (layers.h PackedKernel::
// RunNormalizedFused / RunFused) with a logging kernel: which Linear folds in
// what, and the same result.

#include "model/inference_precision.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "model/amx_linear.h"
#include "tests/model/parity.h"

namespace oclip::testing {
namespace {

// Smallest cosine similarity between corresponding rows.
double MinRowCosine(const torch::Tensor& actual, const torch::Tensor& expected) {
  return torch::cosine_similarity(actual.to(torch::kDouble), expected.to(torch::kDouble), 1)
      .min()
      .item<double>();
}

struct Features {
  torch::Tensor image;
  torch::Tensor text;
};

Features Encode(ClipModel& model, const std::string& name) {
  torch::InferenceMode inference;
  const std::string expected = name + ".expected.safetensors";
  auto image = model.EncodeImage(LoadReferenceTensor(expected, "images"));
  EXPECT_TRUE(image.ok()) << image.status();
  auto text = model.EncodeText(FixtureTokens(name));
  EXPECT_TRUE(text.ok()) << text.status();
  return {image.ok() ? *image : torch::Tensor(), text.ok() ? *text : torch::Tensor()};
}

std::shared_ptr<ClipModel> LoadPrepared(const std::string& name, InferencePrecision precision,
                                        PreparedKernels* kernels = nullptr) {
  std::shared_ptr<ClipModel> model = LoadFixtureModel(name);
  if (model == nullptr) return nullptr;
  absl::StatusOr<PreparedKernels> prepared = PrepareForInference(*model, precision);
  EXPECT_TRUE(prepared.ok()) << prepared.status();
  if (!prepared.ok()) return nullptr;
  if (kernels != nullptr) *kernels = *prepared;
  return model;
}

class PrecisionParityTest : public ::testing::TestWithParam<std::string> {};

// Sets an environment variable for one scope, restoring what was there.
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* previous = std::getenv(name)) previous_ = previous;
    setenv(name, value, /*overwrite=*/1);
  }
  ~ScopedEnvironment() {
    if (previous_.has_value()) {
      setenv(name_, previous_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> previous_;
};

// Both of fp32's GEMM choices: bf16x3 on AMX ("high", the default there) and
// LibTorch's fp32 GEMMs ("highest", and every CPU without AMX-BF16).
TEST_P(PrecisionParityTest, Fp32WithinParityTolerance) {
  const std::string name = GetParam();
  for (const char* matmul_precision : {"high", "highest"}) {
    ScopedEnvironment environment(kFp32MatmulPrecisionVariable, matmul_precision);
    PreparedKernels kernels;
    auto model = LoadPrepared(name, InferencePrecision::kFp32, &kernels);
    ASSERT_NE(model, nullptr);
    EXPECT_GT(kernels.convolutions, 0);  // The patch embedding or the ResNet's.
    const bool bf16x3 = std::string(matmul_precision) == "high" && AmxBf16Available();
    EXPECT_EQ(kernels.linear_kernel, bf16x3 ? "amx_bf16x3_fp32" : "aten_linear_fp32");
    // The ResNet's 1x1 and 3x3 convolutions run as bf16x3 GEMMs over the pixels;
    // a ViT's patch embedding runs on the Linear kernel.
    // fp32 keeps the attention in fp32.
    EXPECT_EQ(kernels.attention_kernel,
              Avx512Available() ? "avx512_fp32" : "aten_matmul_softmax_fp32");
    if (name == "tiny-rn") {
      const std::string resnet = "conv2d_fp32_channels_last_bn_folded";
      EXPECT_EQ(kernels.conv_kernel, bf16x3 ? resnet + "+amx_bf16x3_1x1_3x3" : resnet);
    } else {
      EXPECT_EQ(kernels.conv_kernel, "patch_embedding_as_" + kernels.linear_kernel);
    }
    const Features features = Encode(*model, name);
    const std::string expected = name + ".expected.safetensors";
    const double image_error =
        RelativeError(features.image, LoadReferenceTensor(expected, "image_features"));
    const double text_error =
        RelativeError(features.text, LoadReferenceTensor(expected, "text_features"));
    EXPECT_LT(image_error, kParityTolerance) << matmul_precision;
    EXPECT_LT(text_error, kParityTolerance) << matmul_precision;
    std::cout << "[ fp32     ] " << name << " (" << kernels.linear_kernel
              << ") relative error image " << image_error << " text " << text_error << "\n";
  }
}

TEST(InferencePrecisionTest, RefusesAnUnknownFp32MatmulPrecision) {
  ScopedEnvironment environment(kFp32MatmulPrecisionVariable, "medium");
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  const absl::StatusOr<PreparedKernels> prepared =
      PrepareForInference(*model, InferencePrecision::kFp32);
  EXPECT_EQ(prepared.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(prepared.status().message(), "highest")) << prepared.status();
  // Other precisions do not read it.
  EXPECT_TRUE(PrepareForInference(*LoadFixtureModel("tiny-vit"), InferencePrecision::kBf16).ok());
}

void ExpectCosines(const std::string& name, InferencePrecision precision, double min_cosine) {
  auto model = LoadPrepared(name, precision);
  ASSERT_NE(model, nullptr);
  const Features features = Encode(*model, name);
  const std::string expected_file = name + ".expected.safetensors";
  const torch::Tensor expected_image = LoadReferenceTensor(expected_file, "image_features");
  const torch::Tensor expected_text = LoadReferenceTensor(expected_file, "text_features");
  const double image_cosine = MinRowCosine(features.image, expected_image);
  const double text_cosine = MinRowCosine(features.text, expected_text);
  EXPECT_GE(image_cosine, min_cosine);
  EXPECT_GE(text_cosine, min_cosine);
  // Reduced precision must actually have run: the exact fp32 math would agree
  // with the reference to float rounding.
  EXPECT_GT(RelativeError(features.image, expected_image), 1e-4);
  EXPECT_GT(RelativeError(features.text, expected_text), 1e-4);
  std::cout << "[ " << InferencePrecisionName(precision) << "     ] " << name
            << " min row cosine image " << image_cosine << " text " << text_cosine << "\n";
}

TEST_P(PrecisionParityTest, Bf16CosineAtLeast0999) {
  ExpectCosines(GetParam(), InferencePrecision::kBf16, 0.999);
}

TEST_P(PrecisionParityTest, Int8CosineAtLeast099) {
  ExpectCosines(GetParam(), InferencePrecision::kInt8, 0.99);
}

// A prepared model serves concurrent forwards (oclip serve's workers share
// one), its first ones included (kernels that finish preparing on first use):
// every thread gets what one forward at a time on a twin model gives, up to
// accumulation order (a thread of its own may split a GEMM over another
// number of intra-op threads): within 1e-5 of the features' scale, where a
// race would give garbage.
TEST_P(PrecisionParityTest, ConcurrentForwardsMatchOneAtATime) {
  const std::string& name = GetParam();
  const torch::Tensor images = LoadReferenceTensor(name + ".expected.safetensors", "images");
  for (const InferencePrecision precision :
       {InferencePrecision::kFp32, InferencePrecision::kBf16, InferencePrecision::kInt8}) {
    std::shared_ptr<ClipModel> model = LoadPrepared(name, precision);
    std::shared_ptr<ClipModel> twin = LoadPrepared(name, precision);
    ASSERT_NE(model, nullptr);
    ASSERT_NE(twin, nullptr);
    torch::Tensor alone;
    {
      torch::InferenceMode inference;
      absl::StatusOr<torch::Tensor> features = twin->EncodeImage(images);
      ASSERT_TRUE(features.ok()) << features.status();
      alone = *features;
    }
    constexpr int kThreads = 4;
    std::vector<double> errors(kThreads, -1.0);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        torch::InferenceMode inference;
        double worst = 0.0;
        for (int call = 0; call < 3; ++call) {
          absl::StatusOr<torch::Tensor> features = model->EncodeImage(images);
          if (!features.ok()) return;  // errors[t] stays -1
          worst = std::max(worst, (*features - alone).abs().max().item<double>() /
                                      alone.abs().max().item<double>());
        }
        errors[t] = worst;
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int t = 0; t < kThreads; ++t) {
      EXPECT_GE(errors[t], 0.0) << name << " " << InferencePrecisionName(precision)
                                << ": thread " << t << " failed to encode";
      EXPECT_LE(errors[t], 1e-5) << name << " " << InferencePrecisionName(precision)
                                 << ": thread " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PrecisionParityTest,
                         ::testing::Values("tiny-vit", "tiny-vit-quickgelu", "tiny-rn",
                                           "hf/tiny-roberta-vit"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

TEST(InferencePrecisionTest, TrainingIgnoresPreparedKernels) {
  // With autograd on (training), the plain weights run: the int8 kernels and
  // the folded BatchNorm must not leak into it.
  for (const std::string name : {"tiny-vit", "tiny-rn"}) {
    auto model = LoadPrepared(name, InferencePrecision::kInt8);
    ASSERT_NE(model, nullptr);
    const std::string expected = name + ".expected.safetensors";
    torch::Tensor features = model->ImageForward(LoadReferenceTensor(expected, "images"));
    EXPECT_TRUE(features.requires_grad());
    EXPECT_LT(RelativeError(features, LoadReferenceTensor(expected, "image_features")),
              kParityTolerance)
        << name;
  }
}

TEST(InferencePrecisionTest, CountsWhatItPrepared) {
  PreparedKernels kernels;
  ASSERT_NE(LoadPrepared("tiny-rn", InferencePrecision::kInt8, &kernels), nullptr);
  // tiny-rn: 3 stem convolutions + 3 per bottleneck + downsamples, each with
  // its BatchNorm; the attention pool's q/k/v/c_proj and the text tower's
  // in_proj/out_proj/c_fc/c_proj per block.
  EXPECT_EQ(kernels.folded_batch_norms, kernels.convolutions);
  EXPECT_GT(kernels.linears, 4);
  EXPECT_NE(kernels.linear_kernel.find("int8"), std::string::npos);
  // The int8 parity tests above run the AMX kernel where the CPU has it.
  if (AmxInt8Available()) {
    EXPECT_EQ(kernels.linear_kernel, "amx_int8_per_row_dynamic");
    // No int8 convolution exists here; bf16's AMX one is the fastest.
    EXPECT_EQ(kernels.conv_kernel, "conv2d_bf16_channels_last_bn_folded");
    // The text tower's attention products in bf16 on the tiles.
    EXPECT_EQ(kernels.attention_kernel, AmxBf16Available() ? "amx_bf16" : "avx512_fp32");
  } else {
    EXPECT_NE(kernels.linear_kernel.find("dynamic_int8_per_channel"), std::string::npos);
  }
}

TEST(InferencePrecisionTest, RefusesTrainingMode) {
  auto model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  model->train();
  EXPECT_EQ(PrepareForInference(*model, InferencePrecision::kInt8).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// The names themselves are tested with server.yaml (tests/server).
TEST(InferencePrecisionTest, RefusesWhatTheDeviceCannotRun) {
  const torch::Device cpu(torch::kCPU);
  const torch::Device cuda(torch::kCUDA, 0);
  EXPECT_TRUE(CheckPrecisionOnDevice(InferencePrecision::kInt8, cpu).ok());
  EXPECT_TRUE(CheckPrecisionOnDevice(InferencePrecision::kBf16, cuda).ok());
  EXPECT_EQ(CheckPrecisionOnDevice(InferencePrecision::kFp16, cpu).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CheckPrecisionOnDevice(InferencePrecision::kInt8, cuda).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CudaWeightType(InferencePrecision::kFp16), torch::kHalf);
  EXPECT_EQ(CudaWeightType(InferencePrecision::kInt8), torch::kFloat);

  std::shared_ptr<ClipModel> model = LoadFixtureModel("tiny-vit");
  ASSERT_NE(model, nullptr);
  absl::StatusOr<PreparedKernels> fp16 = PrepareForInference(*model, InferencePrecision::kFp16);
  EXPECT_EQ(fp16.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(fp16.status().message(), "CUDA")) << fp16.status();
}

// A plain fp32 Linear kernel that logs each LayerNorm and epilogue it is
// asked to fold in and applies them with PackedKernel's defaults
// (LayerNormImpl::forward, Run, Activate, add).
class LoggingLinearKernel : public PackedKernel {
 public:
  LoggingLinearKernel(const torch::Tensor& weight, const torch::Tensor& bias, std::string name,
                      std::vector<std::string>* log)
      : weight_(weight.detach().clone()),
        bias_(bias.detach().clone()),
        name_(std::move(name)),
        log_(log) {}
  LoggingLinearKernel(const LinearImpl& linear, std::string name, std::vector<std::string>* log)
      : LoggingLinearKernel(linear.weight, linear.bias, std::move(name), log) {}

  torch::Tensor Run(const torch::Tensor& x) const override {
    log_->push_back(name_);
    return torch::linear(x, weight_, bias_);
  }
  torch::Tensor RunFused(const torch::Tensor& x, const LinearEpilogue& epilogue) const override {
    log_->push_back(name_ + (epilogue.activation.has_value() ? " activation" : "") +
                    (epilogue.residual.defined() ? " residual" : ""));
    std::vector<std::string> inner;  // Run's own entry, not logged.
    std::swap(inner, *log_);
    torch::Tensor y = PackedKernel::RunFused(x, epilogue);
    std::swap(inner, *log_);
    return y;
  }
  torch::Tensor RunNormalizedFused(const torch::Tensor& x, LayerNormImpl& ln,
                                   const LinearEpilogue& epilogue) const override {
    log_->push_back(name_ + " layer_norm");
    std::vector<std::string> inner;  // RunFused's own entry, not logged.
    std::swap(inner, *log_);
    torch::Tensor y = PackedKernel::RunNormalizedFused(x, ln, epilogue);
    std::swap(inner, *log_);
    log_->back() += inner.at(0).substr(name_.size());  // + what RunFused was asked to fold in
    return y;
  }

 private:
  torch::Tensor weight_;
  torch::Tensor bias_;
  std::string name_;
  std::vector<std::string>* log_;
};

TEST(FusedEpilogueTest, ResidualBlockFoldsLayerNormsActivationAndResidualsIntoPackedKernels) {
  torch::manual_seed(7);
  for (const Activation activation : {Activation::kGelu, Activation::kQuickGelu}) {
    ResidualAttentionBlock block(16, 2, 64, activation, torch::TensorOptions());
    {
      torch::NoGradGuard no_grad;
      for (torch::Tensor& p : block->parameters()) p.normal_(0.0, 0.3);
    }
    block->eval();
    const torch::Tensor x = torch::randn({3, 5, 16});
    torch::Tensor expected;
    {
      torch::InferenceMode inference;
      expected = block(x, torch::Tensor());  // no packed kernels: the plain layers
    }
    std::vector<std::string> log;
    block->attn->packed_in_proj = std::make_shared<LoggingLinearKernel>(
        block->attn->in_proj_weight, block->attn->in_proj_bias, "in_proj", &log);
    block->attn->out_proj->packed =
        std::make_shared<LoggingLinearKernel>(*block->attn->out_proj, "out_proj", &log);
    block->mlp->c_fc->packed = std::make_shared<LoggingLinearKernel>(*block->mlp->c_fc, "c_fc", &log);
    block->mlp->c_proj->packed =
        std::make_shared<LoggingLinearKernel>(*block->mlp->c_proj, "c_proj", &log);
    torch::Tensor fused;
    {
      torch::InferenceMode inference;
      fused = block(x, torch::Tensor());
    }
    EXPECT_EQ(log, (std::vector<std::string>{"in_proj layer_norm", "out_proj residual",
                                             "c_fc layer_norm activation", "c_proj residual"}));
    EXPECT_LE((fused - expected).abs().max().item<double>(), 1e-6);
    // Autograd on (training): the plain weights and ops run, never a kernel.
    log.clear();
    const torch::Tensor trained = block(x.clone().requires_grad_(true), torch::Tensor());
    EXPECT_TRUE(log.empty());
    EXPECT_TRUE(trained.requires_grad());
    EXPECT_LE((trained.detach() - expected).abs().max().item<double>(), 1e-6);
  }
}

}  // namespace
}  // namespace oclip::testing
