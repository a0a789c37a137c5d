#include "model/inference_precision.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/amx_linear.h"
#include "model/bf16_relu.h"
#include "model/modified_resnet.h"
#include "model/vision_transformer.h"

namespace oclip {
namespace {

// [..., in] -> [M, in] contiguous, and the output shape [..., out].
std::vector<int64_t> OutputShape(const torch::Tensor& x, int64_t out_features) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  return shape;
}

// OCLIP_FP32_MATMUL_PRECISION: true for "high" (or unset), false for "highest".
absl::StatusOr<bool> Fp32MatmulPrecisionIsHigh() {
  const char* value = std::getenv(kFp32MatmulPrecisionVariable);
  if (value == nullptr || absl::string_view(value).empty() || absl::string_view(value) == "high") {
    return true;
  }
  if (absl::string_view(value) == "highest") return false;
  return absl::InvalidArgumentError(absl::StrCat(kFp32MatmulPrecisionVariable, " is \"", value,
                                                 "\"; use high (bf16x3 on AMX, the default) "
                                                 "or highest (plain fp32 GEMMs)"));
}

class Bf16LinearKernel : public PackedKernel {
 public:
  Bf16LinearKernel(const torch::Tensor& weight, const torch::Tensor& bias)
      : weight_(weight.detach().to(torch::kBFloat16).contiguous()),
        bias_(bias.defined() ? bias.detach().to(torch::kBFloat16) : torch::Tensor()) {}

  // In LibTorch 1.13 a bf16 addmm on the CPU runs oneDNN's matmul (brgemm,
  // AMX where present); the casts around it are elementwise and cheap next to it.
  torch::Tensor Run(const torch::Tensor& x) const override {
    return torch::linear(x.to(torch::kBFloat16), weight_, bias_).to(x.scalar_type());
  }

 private:
  torch::Tensor weight_;
  torch::Tensor bias_;
};

// Dynamic quantization, as torch.ao.quantization.quantize_dynamic: the weight is
// int8 once, activations are quantized per call (per tensor, asymmetric uint8)
// and the output is fp32. Per-output-channel weight scales keep each row exact
// to within its own range.
class Int8DynamicLinearKernel : public PackedKernel {
 public:
  explicit Int8DynamicLinearKernel(c10::intrusive_ptr<LinearPackedParamsBase> packed,
                                   int64_t out_features, bool reduce_range)
      : packed_(std::move(packed)), out_features_(out_features), reduce_range_(reduce_range) {}

  torch::Tensor Run(const torch::Tensor& x) const override {
    const torch::Tensor flat = x.reshape({-1, x.size(-1)}).to(torch::kFloat).contiguous();
    return packed_->apply_dynamic(flat, reduce_range_)
        .view(OutputShape(x, out_features_))
        .to(x.scalar_type());
  }

 private:
  c10::intrusive_ptr<LinearPackedParamsBase> packed_;
  int64_t out_features_;
  bool reduce_range_;
};

// The epilogue as the AMX kernels (model/amx_linear.h) take it.
AmxEpilogue ToAmxEpilogue(const LinearEpilogue& epilogue) {
  AmxEpilogue fused;
  fused.residual = epilogue.residual;
  fused.activation_after_residual = epilogue.activation_after_residual;
  if (epilogue.activation.has_value()) {
    switch (*epilogue.activation) {
      case Activation::kGelu:
        fused.activation = AmxActivation::kGelu;
        break;
      case Activation::kQuickGelu:
        fused.activation = AmxActivation::kQuickGelu;
        break;
      case Activation::kRelu:
        fused.activation = AmxActivation::kRelu;
        break;
    }
  }
  return fused;
}

// A Linear on AMX tiles (model/amx_linear.h), its weight packed once: int8
// (weights per output channel, activations quantized per row on every call,
// exact int32 accumulation) or fp32 as bf16x3 (each operand split into two
// bfloat16, three tile products, fp32 accumulation); fp32 out either way.
template <typename PackedWeight, PackedWeight (*kPack)(const at::Tensor&),
          at::Tensor (*kLinear)(const at::Tensor&, const PackedWeight&, const at::Tensor&,
                                const AmxEpilogue&, const AmxInputLayerNorm&)>
class AmxLinearKernel : public PackedKernel {
 public:
  AmxLinearKernel(const torch::Tensor& weight, const torch::Tensor& bias)
      : weight_(kPack(weight)),
        bias_(bias.defined() ? bias.detach().to(torch::kFloat).contiguous() : torch::Tensor()) {}

  torch::Tensor Run(const torch::Tensor& x) const override {
    return kLinear(x, weight_, bias_, {}, {});
  }

  // The transformers' GELU / QuickGELU and residual adds, and the ResNet's
  // ReLU after its residual add, are applied while the kernel writes its fp32
  // output, the LayerNorms while it reads its input.
  torch::Tensor RunFused(const torch::Tensor& x, const LinearEpilogue& epilogue) const override {
    return RunAmx(x, epilogue, nullptr);
  }
  torch::Tensor RunNormalizedFused(const torch::Tensor& x, LayerNormImpl& ln,
                                   const LinearEpilogue& epilogue) const override {
    return RunAmx(x, epilogue, &ln);
  }

 private:
  torch::Tensor RunAmx(const torch::Tensor& x, const LinearEpilogue& epilogue,
                       LayerNormImpl* ln) const {
    AmxInputLayerNorm norm;
    if (ln != nullptr) {
      norm.weight = ln->weight;
      norm.bias = ln->bias;
      norm.eps = ln->eps;
    }
    return kLinear(x, weight_, bias_, ToAmxEpilogue(epilogue), norm);
  }

  PackedWeight weight_;
  torch::Tensor bias_;
};

using AmxInt8LinearKernel = AmxLinearKernel<Int8PackedWeight, &PackInt8Weight, &AmxInt8Linear>;
using AmxBf16x3LinearKernel =
    AmxLinearKernel<Bf16x3PackedWeight, &PackBf16x3Weight, &AmxBf16x3Linear>;

// A Conv2d whose stride equals its kernel and has no padding (the ViT patch
// embedding) is a GEMM over the non-overlapping patches: unfold them with one
// permuting copy, run the linear kernel, and hand back [N, out, g, g] as a view
// of the row-major [N, g, g, out] result, which is what the tower flattens
// into its tokens anyway (so that view costs nothing downstream).
class PatchLinearKernel : public PackedKernel {
 public:
  PatchLinearKernel(std::shared_ptr<const PackedKernel> linear, int64_t patch)
      : linear_(std::move(linear)), patch_(patch) {}

  torch::Tensor Run(const torch::Tensor& x) const override {
    const int64_t n = x.size(0), c = x.size(1), gh = x.size(2) / patch_, gw = x.size(3) / patch_;
    torch::Tensor patches = x.slice(2, 0, gh * patch_)
                                .slice(3, 0, gw * patch_)
                                .reshape({n, c, gh, patch_, gw, patch_})
                                .permute({0, 2, 4, 1, 3, 5})
                                .reshape({n * gh * gw, c * patch_ * patch_});
    torch::Tensor y = linear_->Run(patches);
    return y.view({n, gh, gw, y.size(1)}).permute({0, 3, 1, 2});
  }

 private:
  std::shared_ptr<const PackedKernel> linear_;
  int64_t patch_;
};

// fp32 GEMM as the plain layer runs it (OpenBLAS in Debian's LibTorch). The
// oneDNN fp32 inner product (at::mkldnn_linear, which needs its input in
// oneDNN's layout and back) measured slower here: 28-43 GFLOP/s against
// OpenBLAS's 36-54 on ViT-B-32's and the text tower's shapes, 2 threads.
class PlainLinearKernel : public PackedKernel {
 public:
  PlainLinearKernel(const torch::Tensor& weight, const torch::Tensor& bias)
      : weight_(weight.detach().contiguous()),
        bias_(bias.defined() ? bias.detach() : torch::Tensor()) {}
  torch::Tensor Run(const torch::Tensor& x) const override {
    return torch::linear(x, weight_, bias_);
  }

 private:
  torch::Tensor weight_;
  torch::Tensor bias_;
};

// A oneDNN convolution whose weights are reordered once, into the layout its
// kernel wants, by LibTorch's mkldnn_prepacked ops (those of the JIT's frozen
// graphs): torch::conv2d reorders them on every call. Its "relu" form writes
// relu(conv(x)) in the convolution's own output pass. RN50's bf16
// convolutions, batch 8, 2 threads: 0-15% faster than torch::conv2d alone,
// 5-45% with the ReLU. Null where this LibTorch lacks the ops (no oneDNN) or
// refuses to prepack (bf16 on a CPU without oneDNN's bf16 kernels).
class PrepackedConvolution {
 public:
  static std::unique_ptr<PrepackedConvolution> Create(const torch::Tensor& weight,
                                                      const torch::Tensor& bias, int64_t stride,
                                                      int64_t padding, bool relu) {
    const auto prepack = c10::Dispatcher::singleton().findSchema(
        {"mkldnn_prepacked::conv2d_prepack", ""});
    const auto run = c10::Dispatcher::singleton().findSchema({"mkldnn_prepacked::conv2d_run", ""});
    if (!prepack.has_value() || !run.has_value()) return nullptr;
    // LibTorch sends bf16 convolutions to oneDNN only where it has bf16
    // kernels (AVX-512), and to its own slower ones elsewhere; the prepacked
    // ops would not.
    if (weight.scalar_type() == torch::kBFloat16 && !Avx512Available()) return nullptr;
    // The input size only guides oneDNN's choice of weight layout; any input
    // runs (checked against torch::conv2d for other batch and image sizes).
    torch::jit::Stack stack{weight,
                            bias,
                            std::vector<int64_t>{stride, stride},
                            std::vector<int64_t>{padding, padding},
                            std::vector<int64_t>{1, 1},
                            int64_t{1},
                            std::vector<int64_t>{1, weight.size(1), 56, 56},
                            std::string(relu ? "relu" : "none")};
    try {
      prepack->callBoxed(&stack);
    } catch (const c10::Error&) {
      return nullptr;
    }
    return std::unique_ptr<PrepackedConvolution>(new PrepackedConvolution(*run, stack[0]));
  }

  torch::Tensor Run(const torch::Tensor& x) const {
    torch::jit::Stack stack{x, context_};
    run_.callBoxed(&stack);
    return stack[0].toTensor();
  }

 private:
  PrepackedConvolution(c10::OperatorHandle run, c10::IValue context)
      : run_(std::move(run)), context_(std::move(context)) {}

  c10::OperatorHandle run_;
  c10::IValue context_;  // the prepacked weights; read-only once built
};

// Convolution with the following eval-mode BatchNorm folded in
// (w' = w·γ/σ, b' = β − μ·γ/σ), weights channels-last: oneDNN then runs the
// convolution on NHWC activations without reordering them on every call, and
// relu/add/avg_pool keep the layout, so the activations are converted once at
// the stem. The prepacked forms (with and without ReLU) are built on first use:
// a ResNet runs each convolution in one of them only.
class ConvKernel : public PackedKernel {
 public:
  ConvKernel(torch::Tensor weight, torch::Tensor bias, int64_t stride, int64_t padding,
             torch::ScalarType dtype)
      : weight_(weight.to(dtype).contiguous(at::MemoryFormat::ChannelsLast)),
        bias_(bias.defined() ? bias.to(dtype) : torch::Tensor()),
        stride_(stride),
        padding_(padding),
        dtype_(dtype) {}

  torch::Tensor Run(const torch::Tensor& x) const override { return Convolve(x, false); }

  // relu(conv(x)) in the convolution's output pass; the ResNet's
  // relu(conv(x) + identity) in place on the convolution's output, which is
  // this call's own (no second activation-sized buffer).
  torch::Tensor RunFused(const torch::Tensor& x, const LinearEpilogue& epilogue) const override {
    if (epilogue.activation != Activation::kRelu ||
        (epilogue.residual.defined() &&
         (!epilogue.activation_after_residual || epilogue.residual.scalar_type() != dtype_))) {
      return PackedKernel::RunFused(x, epilogue);
    }
    if (!epilogue.residual.defined()) return Convolve(x, true);
    torch::Tensor y = Convolve(x, false);
    if (TryAddReluBf16InPlace(y, epilogue.residual)) return y;
    return y.add_(epilogue.residual).relu_();
  }

 private:
  torch::Tensor Convolve(const torch::Tensor& x, bool relu) const {
    const torch::Tensor input = x.to(dtype_).contiguous(at::MemoryFormat::ChannelsLast);
    Prepacked& prepacked = prepacked_[relu ? 1 : 0];
    std::call_once(prepacked.once, [&] {
      prepacked.convolution = PrepackedConvolution::Create(weight_, bias_, stride_, padding_, relu);
    });
    if (prepacked.convolution != nullptr) return prepacked.convolution->Run(input);
    torch::Tensor y = torch::conv2d(input, weight_, bias_, stride_, padding_);
    if (relu && !TryAddReluBf16InPlace(y, torch::Tensor())) y.relu_();
    return y;
  }

  struct Prepacked {
    std::once_flag once;
    std::unique_ptr<PrepackedConvolution> convolution;  // null: torch::conv2d
  };

  torch::Tensor weight_;
  torch::Tensor bias_;
  int64_t stride_;
  int64_t padding_;
  torch::ScalarType dtype_;
  mutable Prepacked prepacked_[2];  // without and with ReLU
};

// A 1x1 convolution with stride 1 and no padding is a Linear over the pixels:
// on channels-last activations [N, C, H, W] (NHWC in memory, as the ResNet
// keeps them) the pixels are the rows of an [N·H·W, C] matrix, so the linear
// kernel runs on a view and its [N·H·W, out] result is the channels-last output.
class PointwiseConvKernel : public PackedKernel {
 public:
  explicit PointwiseConvKernel(std::shared_ptr<const PackedKernel> linear)
      : linear_(std::move(linear)) {}

  torch::Tensor Run(const torch::Tensor& x) const override { return RunFused(x, {}); }

  // The linear kernel's epilogue, the residual [N, out, H, W] as its rows.
  torch::Tensor RunFused(const torch::Tensor& x, const LinearEpilogue& epilogue) const override {
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    const torch::Tensor pixels = x.contiguous(at::MemoryFormat::ChannelsLast)
                                     .permute({0, 2, 3, 1})
                                     .reshape({n * h * w, c});
    LinearEpilogue rows = epilogue;
    if (epilogue.residual.defined()) {
      rows.residual = epilogue.residual.permute({0, 2, 3, 1}).reshape({n * h * w, -1});
    }
    const torch::Tensor y = linear_->RunFused(pixels, rows);
    return y.view({n, h, w, y.size(1)}).permute({0, 3, 1, 2});
  }

 private:
  std::shared_ptr<const PackedKernel> linear_;
};

// A 3x3 convolution (stride 1, padding 1) as a bf16x3 implicit GEMM
// (model/amx_linear.h), channels-last in and out.
class Bf16x3Conv3x3Kernel : public PackedKernel {
 public:
  Bf16x3Conv3x3Kernel(const torch::Tensor& weight, const torch::Tensor& bias)
      : weight_(PackBf16x3Conv3x3Weight(weight)),
        bias_(bias.defined() ? bias.detach().to(torch::kFloat).contiguous() : torch::Tensor()) {}

  torch::Tensor Run(const torch::Tensor& x) const override {
    return AmxBf16x3Conv3x3(x, weight_, bias_);
  }
  torch::Tensor RunFused(const torch::Tensor& x, const LinearEpilogue& epilogue) const override {
    return AmxBf16x3Conv3x3(x, weight_, bias_, ToAmxEpilogue(epilogue));
  }

 private:
  Bf16x3PackedWeight weight_;
  torch::Tensor bias_;
};

// Builds the kernels of one precision; remembers what it built.
class KernelFactory {
 public:
  static absl::StatusOr<KernelFactory> Create(InferencePrecision precision) {
    KernelFactory factory(precision);
    if (precision == InferencePrecision::kFp32) {
      OCLIP_ASSIGN_OR_RETURN(const bool high, Fp32MatmulPrecisionIsHigh());
      factory.amx_bf16x3_ = high && AmxBf16Available();
      return factory;
    }
    if (precision == InferencePrecision::kInt8) {
      // AMX where this CPU and kernel allow it; LibTorch's quantized engine otherwise.
      factory.amx_int8_ = AmxInt8Available();
      if (factory.amx_int8_) return factory;
      const auto engines = at::globalContext().supportedQEngines();
      // fbgemm is PyTorch's x86 default; Debian's LibTorch 1.13 is built
      // without it and has oneDNN's quantized kernels instead.
      for (at::QEngine engine : {at::QEngine::FBGEMM, at::QEngine::ONEDNN}) {
        if (std::find(engines.begin(), engines.end(), engine) != engines.end()) {
          factory.engine_ = engine;
          break;
        }
      }
      if (factory.engine_ == at::QEngine::NoQEngine) {
        return absl::FailedPreconditionError(
            "int8 inference needs LibTorch's fbgemm or oneDNN quantized engine; this "
            "LibTorch has neither");
      }
    }
    return factory;
  }

  // What the transformer blocks' attention computes its products in: bf16
  // where the Linears round as coarsely (bf16, int8), fp32 for fp32.
  AttentionPrecision Attention() {
    ++attentions_;
    return AttentionComputesIn();
  }

  std::shared_ptr<const PackedKernel> Linear(const torch::Tensor& weight,
                                             const torch::Tensor& bias) {
    ++linears_;
    switch (precision_) {
      case InferencePrecision::kFp32:
      case InferencePrecision::kFp16:  // refused before a factory exists
        if (amx_bf16x3_) return std::make_shared<AmxBf16x3LinearKernel>(weight, bias);
        return std::make_shared<PlainLinearKernel>(weight, bias);
      case InferencePrecision::kBf16:
        return std::make_shared<Bf16LinearKernel>(weight, bias);
      case InferencePrecision::kInt8:
        break;
    }
    if (amx_int8_) return std::make_shared<AmxInt8LinearKernel>(weight, bias);
    static const auto prepack =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("quantized::linear_prepack", "")
            .typed<c10::intrusive_ptr<LinearPackedParamsBase>(at::Tensor,
                                                              c10::optional<at::Tensor>)>();
    const torch::Tensor w = weight.detach().to(torch::kFloat).contiguous();
    const torch::Tensor scales =
        (std::get<0>(w.abs().max(1)) / 127.0).clamp_min(1e-8).to(torch::kDouble);
    const torch::Tensor qweight = at::quantize_per_channel(
        w, scales, torch::zeros({w.size(0)}, torch::kLong), /*axis=*/0, torch::kQInt8);
    // The prepack operator packs for the process-wide quantized engine; the
    // packed object keeps its engine's kernels, so the setting is only needed here.
    struct EngineScope {
      explicit EngineScope(at::QEngine engine) : previous(at::globalContext().qEngine()) {
        at::globalContext().setQEngine(engine);
      }
      ~EngineScope() { at::globalContext().setQEngine(previous); }
      at::QEngine previous;
    } engine_scope(engine_);
    c10::intrusive_ptr<LinearPackedParamsBase> packed = prepack.call(
        qweight, bias.defined() ? c10::optional<at::Tensor>(bias.detach().to(torch::kFloat))
                                : c10::nullopt);
    // fbgemm's AVX2 kernels can saturate with 8-bit activations; PyTorch's
    // dynamic Linear quantizes them to 7 bits there. oneDNN needs no such range.
    return std::make_shared<Int8DynamicLinearKernel>(std::move(packed), w.size(0),
                                                     engine_ == at::QEngine::FBGEMM);
  }

  // Whether plain Linear modules get a kernel: not where fp32 keeps
  // LibTorch's own GEMM, which the plain layer already runs.
  bool PacksLinears() const { return precision_ != InferencePrecision::kFp32 || amx_bf16x3_; }

  std::shared_ptr<const PackedKernel> PatchEmbedding(const Conv2dImpl& conv) {
    ++convolutions_;
    ++patch_embeddings_;
    --linears_;  // Counted as a convolution.
    const torch::Tensor weight = conv.weight.detach().reshape({conv.weight.size(0), -1});
    return std::make_shared<PatchLinearKernel>(Linear(weight, conv.bias),
                                               conv.weight.size(2));
  }

  std::shared_ptr<const PackedKernel> Conv(const Conv2dImpl& conv, BatchNorm2dImpl* bn) {
    ++convolutions_;
    torch::Tensor weight = conv.weight.detach().to(torch::kFloat);
    torch::Tensor bias = conv.bias.defined() ? conv.bias.detach().to(torch::kFloat)
                                             : torch::Tensor();
    if (bn != nullptr) {
      const torch::Tensor inv_std = torch::rsqrt(bn->running_var.detach().to(torch::kDouble) + 1e-5);
      const torch::Tensor gamma = bn->weight.detach().to(torch::kDouble) * inv_std;
      weight = (weight.to(torch::kDouble) * gamma.view({-1, 1, 1, 1})).to(torch::kFloat);
      torch::Tensor shift = bn->bias.detach().to(torch::kDouble) -
                            bn->running_mean.detach().to(torch::kDouble) * gamma;
      if (bias.defined()) shift = shift + bias.to(torch::kDouble) * gamma;
      bias = shift.to(torch::kFloat);
      bn->folded_into_conv = true;
      ++folded_;
    }
    if (amx_bf16x3_ && weight.size(2) == 1 && weight.size(3) == 1 && conv.stride == 1 &&
        conv.padding == 0) {
      ++amx_convolutions_;
      return std::make_shared<PointwiseConvKernel>(std::make_shared<AmxBf16x3LinearKernel>(
          weight.reshape({weight.size(0), weight.size(1)}), bias));
    }
    if (amx_bf16x3_ && weight.size(2) == 3 && weight.size(3) == 3 && conv.stride == 1 &&
        conv.padding == 1) {
      ++amx_convolutions_;
      return std::make_shared<Bf16x3Conv3x3Kernel>(weight, bias);
    }
    return std::make_shared<ConvKernel>(weight, bias, conv.stride, conv.padding, ConvType());
  }

  PreparedKernels Summary() const {
    PreparedKernels summary;
    summary.precision = precision_;
    switch (precision_) {
      case InferencePrecision::kFp32:
      case InferencePrecision::kFp16:
        summary.linear_kernel = amx_bf16x3_ ? "amx_bf16x3_fp32" : "aten_linear_fp32";
        break;
      case InferencePrecision::kBf16:
        summary.linear_kernel = "aten_linear_bf16_onednn";
        break;
      case InferencePrecision::kInt8:
        summary.linear_kernel =
            amx_int8_ ? "amx_int8_per_row_dynamic"
                      : absl::StrCat(engine_ == at::QEngine::FBGEMM ? "fbgemm" : "onednn",
                                     "_dynamic_int8_per_channel");
        break;
    }
    if (convolutions_ > patch_embeddings_) {
      summary.conv_kernel = ConvType() == torch::kBFloat16
                                ? "conv2d_bf16_channels_last_bn_folded"
                                : "conv2d_fp32_channels_last_bn_folded";
      // The ResNet's 1x1 and stride-1 3x3 convolutions, as GEMMs over the pixels.
      if (amx_convolutions_ > 0) absl::StrAppend(&summary.conv_kernel, "+amx_bf16x3_1x1_3x3");
    } else if (patch_embeddings_ > 0) {
      // A ViT's only convolution runs on the Linear kernel.
      summary.conv_kernel = absl::StrCat("patch_embedding_as_", summary.linear_kernel);
    }
    if (attentions_ > 0) {
      summary.attention_kernel = CpuAttentionKernel(AttentionComputesIn());
    }
    summary.linears = linears_;
    summary.convolutions = convolutions_;
    summary.folded_batch_norms = folded_;
    return summary;
  }

 private:
  explicit KernelFactory(InferencePrecision precision) : precision_(precision) {}

  // The convolutions' dtype: int8 has no convolution kernel of its own and
  // borrows bf16's where the CPU has AMX.
  torch::ScalarType ConvType() const {
    const bool bf16 = precision_ == InferencePrecision::kBf16 ||
                      (precision_ == InferencePrecision::kInt8 && amx_int8_);
    return bf16 ? torch::kBFloat16 : torch::kFloat;
  }

  AttentionPrecision AttentionComputesIn() const {
    return precision_ == InferencePrecision::kBf16 || precision_ == InferencePrecision::kInt8
               ? AttentionPrecision::kBf16
               : AttentionPrecision::kFp32;
  }

  InferencePrecision precision_;
  at::QEngine engine_ = at::QEngine::NoQEngine;
  bool amx_int8_ = false;    // int8 on model/amx_linear.h's AMX kernel
  bool amx_bf16x3_ = false;  // fp32 Linears as bf16x3 on model/amx_linear.h's AMX kernel
  int64_t linears_ = 0;
  int64_t attentions_ = 0;  // MultiheadAttention layers given a precision
  int64_t convolutions_ = 0;
  int64_t amx_convolutions_ = 0;  // ran as bf16x3 GEMMs
  int64_t patch_embeddings_ = 0;  // ran on the Linear kernel
  int64_t folded_ = 0;
};

void PrepareResNet(ModifiedResNetImpl& resnet, KernelFactory& factory) {
  resnet.conv1->packed = factory.Conv(*resnet.conv1, resnet.bn1.get());
  resnet.conv2->packed = factory.Conv(*resnet.conv2, resnet.bn2.get());
  resnet.conv3->packed = factory.Conv(*resnet.conv3, resnet.bn3.get());
  for (auto& stage : resnet.stages) {
    for (auto& block : stage) {
      block->conv1->packed = factory.Conv(*block->conv1, block->bn1.get());
      block->conv2->packed = factory.Conv(*block->conv2, block->bn2.get());
      block->conv3->packed = factory.Conv(*block->conv3, block->bn3.get());
      if (block->downsample) {
        block->downsample->conv->packed =
            factory.Conv(*block->downsample->conv, block->downsample->bn.get());
      }
    }
  }
}

}  // namespace

absl::Status CheckPrecisionOnDevice(InferencePrecision precision, const torch::Device& device) {
  if (precision == InferencePrecision::kFp16 && device.is_cpu()) {
    return absl::FailedPreconditionError("fp16 needs a CUDA device; use fp32, bf16 or int8 on cpu");
  }
  if (precision == InferencePrecision::kInt8 && !device.is_cpu()) {
    return absl::FailedPreconditionError(
        absl::StrCat("int8 runs on cpu only; use fp16 or bf16 on ", device.str()));
  }
  return absl::OkStatus();
}

torch::ScalarType CudaWeightType(InferencePrecision precision) {
  switch (precision) {
    case InferencePrecision::kFp16:
      return torch::kHalf;
    case InferencePrecision::kBf16:
      return torch::kBFloat16;
    case InferencePrecision::kFp32:
    case InferencePrecision::kInt8:
      break;
  }
  return torch::kFloat;
}

absl::StatusOr<PreparedKernels> PrepareForInference(ClipModel& model,
                                                    InferencePrecision precision) {
  if (!model.device().is_cpu()) {
    return absl::FailedPreconditionError(
        "PrepareForInference prepares CPU kernels; the model is on " + model.device().str());
  }
  if (model.logit_scale().scalar_type() != torch::kFloat) {
    return absl::FailedPreconditionError(
        "PrepareForInference needs the model's fp32 weights to convert from");
  }
  if (model.is_training()) {
    return absl::FailedPreconditionError(
        "PrepareForInference needs a model in eval mode (BatchNorm is folded with its "
        "running statistics)");
  }
  OCLIP_RETURN_IF_ERROR(CheckPrecisionOnDevice(precision, torch::Device(torch::kCPU)));
  OCLIP_ASSIGN_OR_RETURN(KernelFactory factory, KernelFactory::Create(precision));
  try {
    torch::NoGradGuard no_grad;
    for (const std::shared_ptr<torch::nn::Module>& module : model.modules(/*include_self=*/false)) {
      if (auto* vit = dynamic_cast<VisionTransformerImpl*>(module.get())) {
        const Conv2dImpl& conv = *vit->conv1;
        if (conv.stride == conv.weight.size(2) && conv.padding == 0 &&
            conv.weight.size(2) == conv.weight.size(3)) {
          vit->conv1->packed = factory.PatchEmbedding(conv);
        }
      } else if (auto* resnet = dynamic_cast<ModifiedResNetImpl*>(module.get())) {
        PrepareResNet(*resnet, factory);
      } else if (auto* attention = dynamic_cast<MultiheadAttentionImpl*>(module.get())) {
        attention->inference_attention = factory.Attention();
        if (factory.PacksLinears()) {
          attention->packed_in_proj =
              factory.Linear(attention->in_proj_weight, attention->in_proj_bias);
        }
      } else if (!factory.PacksLinears()) {
        continue;
      } else if (auto* linear = dynamic_cast<LinearImpl*>(module.get())) {
        linear->packed = factory.Linear(linear->weight, linear->bias);
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("preparing the model for ",
                                            InferencePrecisionName(precision),
                                            " inference failed: ", e.what_without_backtrace()));
  }
  return factory.Summary();
}

}  // namespace oclip
