#include "libprune/models/vgg.h"

#include "libprune/models/init.h"

namespace libprune::models {

VGGImpl::VGGImpl(VGGOptions options_) : FeaturesClassifierImpl(7), options(std::move(options_)) {
  torch::nn::Sequential features;
  int64_t in = options.in_channels();
  for (int64_t v : options.config()) {
    if (v == 0) {
      features->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
    } else {
      features->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, v, 3).padding(1)));
      features->push_back(torch::nn::BatchNorm2d(v));
      features->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
      in = v;
    }
  }
  torch::nn::Sequential classifier(
      torch::nn::Linear(in * 7 * 7, 4096), torch::nn::ReLU(torch::nn::ReLUOptions(true)),
      torch::nn::Dropout(options.dropout()), torch::nn::Linear(4096, 4096),
      torch::nn::ReLU(torch::nn::ReLUOptions(true)), torch::nn::Dropout(options.dropout()),
      torch::nn::Linear(4096, options.num_classes()));
  register_features_and_classifier(features, classifier);
  init_like_torchvision(*this, /*linear_std=*/0.01);
}

namespace {
VGG make(std::vector<int64_t> config, const ModelOptions& o) {
  return VGG(VGGOptions(std::move(config)).num_classes(o.num_classes()).in_channels(o.in_channels()));
}
}  // namespace

VGG vgg11_bn(const ModelOptions& o) { return make({64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}, o); }
VGG vgg16_bn(const ModelOptions& o) {
  return make({64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0}, o);
}

}  // namespace libprune::models
