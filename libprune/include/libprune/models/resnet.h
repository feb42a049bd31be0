#pragma once
// ResNet family with torchvision's module names, so state_dict keys match one for one:
// resnet18/34/50/101/152, resnext50_32x4d, wide_resnet50_2, and the CIFAR-style ResNet-20/32/56/110
// (3x3 stem, 3 stages of 16/32/64 channels, 1x1 projection shortcuts).
#include "libprune/models/model.h"
#include "libprune/nn/call.h"

#include <vector>

namespace libprune::models {

enum class BlockKind { Basic, Bottleneck };
enum class Stem {
  ImageNet,  // 7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool
  Cifar      // 3x3 stride-1 conv, BN, ReLU
};

struct ResNetOptions {
  ResNetOptions(BlockKind block, std::vector<int64_t> layers) : block_(block), layers_(std::move(layers)) {}
  TORCH_ARG(BlockKind, block);
  TORCH_ARG(std::vector<int64_t>, layers);
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(int64_t, width_per_group) = 64;
  TORCH_ARG(Stem, stem) = Stem::ImageNet;
  // Output channels of the stem and of each stage's planes; one width per stage.
  TORCH_ARG(int64_t, stem_width) = 64;
  TORCH_ARG(std::vector<int64_t>, widths) = std::vector<int64_t>{64, 128, 256, 512};
};

class BasicBlockImpl : public torch::nn::Module {
 public:
  static constexpr int64_t expansion = 1;
  BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t groups, int64_t base_width);
  torch::Tensor forward(torch::Tensor x);

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
  libprune::nn::Add add{nullptr};
  // One in-place ReLU per use (relu2 after the residual add), so an extension on each sees one tensor.
  torch::nn::ReLU relu1{nullptr}, relu2{nullptr};
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t expansion = 4;
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, int64_t groups, int64_t base_width);
  torch::Tensor forward(torch::Tensor x);

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
  libprune::nn::Add add{nullptr};
  torch::nn::ReLU relu1{nullptr}, relu2{nullptr}, relu3{nullptr};  // relu3 after the residual add
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public ModelImpl {
 public:
  explicit ResNetImpl(ResNetOptions options);
  torch::Tensor forward(torch::Tensor x) override;

  ResNetOptions options;
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::ReLU relu{nullptr};
  // The ImageNet stem's 3x3/2 max pooling (torchvision's `maxpool`), a module so that extensions and
  // quantization placement see it (int8 passes through it); null for the CIFAR stem.
  torch::nn::MaxPool2d maxpool{nullptr};
  std::vector<torch::nn::Sequential> stages;  // registered as layer1, layer2, ...
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNet);

ResNet resnet18(const ModelOptions& o = {});
ResNet resnet34(const ModelOptions& o = {});
ResNet resnet50(const ModelOptions& o = {});
ResNet resnet101(const ModelOptions& o = {});
ResNet resnet152(const ModelOptions& o = {});
ResNet resnext50_32x4d(const ModelOptions& o = {});
ResNet wide_resnet50_2(const ModelOptions& o = {});

// CIFAR-style ResNet of the given depth (6n+2): 20, 32, 56, 110.
ResNet cifar_resnet(int64_t depth, const ModelOptions& o = ModelOptions().num_classes(10));

}  // namespace libprune::models
