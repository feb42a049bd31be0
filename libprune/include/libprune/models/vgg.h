#pragma once
// VGG with batch norm, torchvision layout: features.N (conv, BN, ReLU, max pool in one Sequential),
// avgpool to 7x7, classifier.0/3/6 linears.
#include "libprune/models/model.h"

#include <vector>

namespace libprune::models {

struct VGGOptions {
  // One entry per layer of `features`: a positive number is a 3x3 conv with that many output
  // channels (followed by BN and ReLU); 0 is a 2x2 max pool.
  explicit VGGOptions(std::vector<int64_t> config) : config_(std::move(config)) {}
  TORCH_ARG(std::vector<int64_t>, config);
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(double, dropout) = 0.5;
};

class VGGImpl : public FeaturesClassifierImpl {
 public:
  explicit VGGImpl(VGGOptions options);
  VGGOptions options;
};
TORCH_MODULE(VGG);

VGG vgg11_bn(const ModelOptions& o = {});
VGG vgg16_bn(const ModelOptions& o = {});

}  // namespace libprune::models
