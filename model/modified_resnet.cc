#include "model/modified_resnet.h"

#include <string>

#include "model/torch_compat.h"

namespace oclip {
namespace {

torch::Tensor AvgPool(const torch::Tensor& x, int64_t k) {
  return k > 1 ? torch::avg_pool2d(x, k) : x;
}

}  // namespace

DownsampleImpl::DownsampleImpl(int64_t in_channels, int64_t out_channels,
                               int64_t stride_value, const torch::TensorOptions& options)
    : conv(in_channels, out_channels, 1, 1, 0, /*bias=*/false, options),
      bn(out_channels, options),
      stride(stride_value) {
  register_module("0", conv);
  register_module("1", bn);
}

torch::Tensor DownsampleImpl::forward(const torch::Tensor& x) {
  return bn(conv(AvgPool(x, stride)));
}

BottleneckImpl::BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride_value,
                               const torch::TensorOptions& options)
    : conv1(inplanes, planes, 1, 1, 0, false, options),
      bn1(planes, options),
      conv2(planes, planes, 3, 1, 1, false, options),
      bn2(planes, options),
      conv3(planes, planes * kExpansion, 1, 1, 0, false, options),
      bn3(planes * kExpansion, options),
      stride(stride_value) {
  register_module("conv1", conv1);
  register_module("bn1", bn1);
  register_module("conv2", conv2);
  register_module("bn2", bn2);
  register_module("conv3", conv3);
  register_module("bn3", bn3);
  if (stride > 1 || inplanes != planes * kExpansion) {
    downsample = register_module(
        "downsample", Downsample(inplanes, planes * kExpansion, stride, options));
  }
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  torch::Tensor out = conv1->ForwardNormRelu(x, *bn1);
  out = conv2->ForwardNormRelu(out, *bn2);
  const torch::Tensor identity = downsample ? downsample(x) : x;
  return conv3->ForwardNormRelu(AvgPool(out, stride), *bn3, identity);
}

AttentionPool2dImpl::AttentionPool2dImpl(int64_t spatial_dim, int64_t embed_dim,
                                         int64_t heads_value, int64_t output_dim,
                                         const torch::TensorOptions& options)
    : k_proj(embed_dim, embed_dim, true, options),
      q_proj(embed_dim, embed_dim, true, options),
      v_proj(embed_dim, embed_dim, true, options),
      c_proj(embed_dim, output_dim, true, options),
      heads(heads_value) {
  positional_embedding = register_parameter(
      "positional_embedding",
      torch::empty({spatial_dim * spatial_dim + 1, embed_dim}, options));
  register_module("k_proj", k_proj);
  register_module("q_proj", q_proj);
  register_module("v_proj", v_proj);
  register_module("c_proj", c_proj);
}

torch::Tensor AttentionPool2dImpl::forward(const torch::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1);
  torch::Tensor tokens = x.flatten(2).transpose(1, 2);  // [N, HW, C]
  tokens = torch::cat({tokens.mean(1, /*keepdim=*/true), tokens}, 1) +
           positional_embedding.to(tokens.dtype());
  // Only the mean token's output is used, so it is the only query.
  const int64_t l = tokens.size(1), dh = c / heads;
  torch::Tensor q = q_proj(tokens.slice(1, 0, 1)).view({n, 1, heads, dh}).transpose(1, 2);
  torch::Tensor k = k_proj(tokens).view({n, l, heads, dh}).transpose(1, 2);
  torch::Tensor v = v_proj(tokens).view({n, l, heads, dh}).transpose(1, 2);
  torch::Tensor out = ScaledDotProductAttention(q, k, v, torch::Tensor());
  return c_proj(out.transpose(1, 2).reshape({n, c}));
}

ModifiedResNetImpl::ModifiedResNetImpl(const VisionConfig& config, int64_t embed_dim,
                                       const torch::TensorOptions& options)
    : conv1(3, config.width / 2, 3, 2, 1, false, options),
      bn1(config.width / 2, options),
      conv2(config.width / 2, config.width / 2, 3, 1, 1, false, options),
      bn2(config.width / 2, options),
      conv3(config.width / 2, config.width, 3, 1, 1, false, options),
      bn3(config.width, options) {
  register_module("conv1", conv1);
  register_module("bn1", bn1);
  register_module("conv2", conv2);
  register_module("bn2", bn2);
  register_module("conv3", conv3);
  register_module("bn3", bn3);
  int64_t inplanes = config.width;
  for (size_t stage = 0; stage < config.resnet_layers.size(); ++stage) {
    const int64_t planes = static_cast<int64_t>(config.width) << stage;
    auto list =
        register_module("layer" + std::to_string(stage + 1), torch::nn::ModuleList());
    stages.emplace_back();
    for (int block = 0; block < config.resnet_layers[stage]; ++block) {
      const int64_t stride = (block == 0 && stage > 0) ? 2 : 1;
      stages.back().emplace_back(inplanes, planes, stride, options);
      list->push_back(stages.back().back());
      inplanes = planes * BottleneckImpl::kExpansion;
    }
  }
  const int64_t pooled_dim = config.width * 32;
  attnpool = register_module(
      "attnpool", AttentionPool2d(config.grid_size(), pooled_dim, config.heads(), embed_dim,
                                  options));
}

torch::Tensor ModifiedResNetImpl::forward(const torch::Tensor& images) {
  // In eval mode every image is computed on its own (BatchNorm uses its running
  // statistics), so a big batch can run a few images at a time. That matters:
  // at batch 32 the stem's and first stage's activations are 50-100 MB each, so
  // every op maps fresh pages from the kernel and streams through memory (page
  // faults were a third of RN50's int8 time); 8 images keep them reusable and
  // cache-sized (1.4x measured at batch 32).
  constexpr int64_t kEvalChunk = 8;
  if (!is_training() && images.size(0) > kEvalChunk) {
    std::vector<torch::Tensor> features;
    for (const torch::Tensor& chunk : images.split(kEvalChunk)) {
      features.push_back(ForwardBatch(chunk));
    }
    return torch::cat(features);
  }
  return ForwardBatch(images);
}

torch::Tensor ModifiedResNetImpl::ForwardBatch(const torch::Tensor& images) {
  torch::Tensor x = images.to(conv1->weight.dtype());
  x = conv1->ForwardNormRelu(x, *bn1);
  x = conv2->ForwardNormRelu(x, *bn2);
  x = conv3->ForwardNormRelu(x, *bn3);
  x = torch::avg_pool2d(x, 2);
  for (auto& stage : stages) {
    for (auto& block : stage) x = block(x);
  }
  return attnpool(x);
}

}  // namespace oclip
