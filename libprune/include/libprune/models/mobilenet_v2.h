#pragma once
// MobileNetV2 with torchvision's layout: features.0 (stem), features.1-17 (inverted residuals,
// each with a `conv` Sequential), features.18 (1x1 to last_channel), classifier.1.
#include "libprune/models/model.h"
#include "libprune/nn/call.h"

namespace libprune::models {

struct MobileNetV2Options {
  MobileNetV2Options() = default;
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(double, width_mult) = 1.0;
  TORCH_ARG(int64_t, round_nearest) = 8;
  TORCH_ARG(double, dropout) = 0.2;
};

class InvertedResidualImpl : public torch::nn::Module {
 public:
  InvertedResidualImpl(int64_t inp, int64_t oup, int64_t stride, int64_t expand_ratio);
  torch::Tensor forward(torch::Tensor x);

  bool use_res_connect = false;
  torch::nn::Sequential conv{nullptr};
  libprune::nn::Add add{nullptr};
};
TORCH_MODULE(InvertedResidual);

class MobileNetV2Impl : public FeaturesClassifierImpl {
 public:
  explicit MobileNetV2Impl(MobileNetV2Options options = {});
  MobileNetV2Options options;
};
TORCH_MODULE(MobileNetV2);

MobileNetV2 mobilenet_v2(const ModelOptions& o = {});

}  // namespace libprune::models
