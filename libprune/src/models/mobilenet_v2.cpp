#include "libprune/models/mobilenet_v2.h"

#include "libprune/models/init.h"

#include <algorithm>
#include <cmath>

namespace libprune::models {
namespace {

// torchvision's _make_divisible: round to a multiple of `divisor`, never dropping below 90%.
int64_t make_divisible(double v, int64_t divisor) {
  int64_t rounded = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

// Conv2dNormActivation: conv (no bias), BN, ReLU6 as children 0, 1, 2.
libprune::nn::Chain conv_bn_relu6(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1,
                                    int64_t groups = 1) {
  return libprune::nn::Chain(
      torch::nn::Conv2d(
          torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding((kernel - 1) / 2).groups(groups).bias(false)),
      torch::nn::BatchNorm2d(out), torch::nn::ReLU6(torch::nn::ReLU6Options(true)));
}

}  // namespace

InvertedResidualImpl::InvertedResidualImpl(int64_t inp, int64_t oup, int64_t stride, int64_t expand_ratio) {
  TORCH_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got ", stride);
  const auto hidden = static_cast<int64_t>(std::round(static_cast<double>(inp * expand_ratio)));
  use_res_connect = stride == 1 && inp == oup;
  conv = torch::nn::Sequential();
  if (expand_ratio != 1) conv->push_back(conv_bn_relu6(inp, hidden, 1));
  conv->push_back(conv_bn_relu6(hidden, hidden, 3, stride, hidden));
  conv->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, oup, 1).bias(false)));
  conv->push_back(torch::nn::BatchNorm2d(oup));
  register_module("conv", conv);
  if (use_res_connect) add = register_module("add", libprune::nn::Add());
}

torch::Tensor InvertedResidualImpl::forward(torch::Tensor x) {
  auto out = libprune::nn::call_sequential(conv, x);
  return use_res_connect ? libprune::nn::call(add, x, out) : out;
}

MobileNetV2Impl::MobileNetV2Impl(MobileNetV2Options options_) : FeaturesClassifierImpl(1), options(options_) {
  const int64_t settings[7][4] = {{1, 16, 1, 1},  {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1},  {6, 160, 3, 2}, {6, 320, 1, 1}};
  const int64_t divisor = options.round_nearest();
  int64_t input_channel = make_divisible(32 * options.width_mult(), divisor);
  const int64_t last_channel = make_divisible(1280 * std::max(1.0, options.width_mult()), divisor);

  torch::nn::Sequential features;
  features->push_back(conv_bn_relu6(options.in_channels(), input_channel, 3, 2));
  for (const auto& s : settings) {
    const int64_t out = make_divisible(s[1] * options.width_mult(), divisor);
    for (int64_t i = 0; i < s[2]; ++i) {
      features->push_back(InvertedResidual(input_channel, out, i == 0 ? s[3] : 1, s[0]));
      input_channel = out;
    }
  }
  features->push_back(conv_bn_relu6(input_channel, last_channel, 1));
  register_features_and_classifier(features, torch::nn::Sequential(torch::nn::Dropout(options.dropout()),
                                                                   torch::nn::Linear(last_channel, options.num_classes())));

  init_like_torchvision(*this, /*linear_std=*/0.01);
}

MobileNetV2 mobilenet_v2(const ModelOptions& o) {
  return MobileNetV2(MobileNetV2Options().num_classes(o.num_classes()).in_channels(o.in_channels()));
}

}  // namespace libprune::models
