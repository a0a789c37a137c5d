// OpenAI's ModifiedResNet image tower (RN50, RN101, RN50x4/16/64): a 3-conv
// stem with an average pool, anti-aliased bottlenecks (strided 3x3 convs
// replaced by an average pool before conv3), and attention pooling whose
// query is the mean token.
//
// forward: images float [N, 3, S, S], S = config.image_size -> [N, embed_dim];
// in eval mode 8 images at a time (see forward).
// State-dict names follow OpenCLIP: conv1..3, bn1..3, layer{1-4}.{j}.*,
// layer{n}.0.downsample.{0,1}.*, attnpool.{positional_embedding,q,k,v,c_proj}.

#ifndef OCLIP_MODEL_MODIFIED_RESNET_H_
#define OCLIP_MODEL_MODIFIED_RESNET_H_

#include <torch/torch.h>

#include "model/config.h"
#include "model/layers.h"

namespace oclip {

// AvgPool(stride) -> 1x1 conv -> BatchNorm; the pool has no parameters, so only
// children "0" and "1" appear in the state dict, as in OpenCLIP's Sequential.
class DownsampleImpl : public torch::nn::Module {
 public:
  DownsampleImpl(int64_t in_channels, int64_t out_channels, int64_t stride,
                 const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  Conv2d conv;
  BatchNorm2d bn;
  int64_t stride;
};
TORCH_MODULE(Downsample);

class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride,
                 const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);

  Conv2d conv1;
  BatchNorm2d bn1;
  Conv2d conv2;
  BatchNorm2d bn2;
  Conv2d conv3;
  BatchNorm2d bn3;
  Downsample downsample{nullptr};
  int64_t stride;
};
TORCH_MODULE(Bottleneck);

class AttentionPool2dImpl : public torch::nn::Module {
 public:
  AttentionPool2dImpl(int64_t spatial_dim, int64_t embed_dim, int64_t heads,
                      int64_t output_dim, const torch::TensorOptions& options);
  // x [N, C, H, W] -> [N, output_dim].
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor positional_embedding;  // [H*W + 1, C]
  Linear k_proj;
  Linear q_proj;
  Linear v_proj;
  Linear c_proj;
  int64_t heads;
};
TORCH_MODULE(AttentionPool2d);

class ModifiedResNetImpl : public torch::nn::Module {
 public:
  ModifiedResNetImpl(const VisionConfig& config, int64_t embed_dim,
                     const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& images);

  Conv2d conv1;
  BatchNorm2d bn1;
  Conv2d conv2;
  BatchNorm2d bn2;
  Conv2d conv3;
  BatchNorm2d bn3;
  std::vector<std::vector<Bottleneck>> stages;  // layer1..layer4
  AttentionPool2d attnpool{nullptr};

 private:
  torch::Tensor ForwardBatch(const torch::Tensor& images);
};
TORCH_MODULE(ModifiedResNet);

}  // namespace oclip

#endif  // OCLIP_MODEL_MODIFIED_RESNET_H_
