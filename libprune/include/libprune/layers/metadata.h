#pragma once
#include <torch/torch.h>

namespace libprune::layers {

// After a plan shrank tensors, brings every C++ module's options in line with its tensors:
// Conv/ConvTranspose in/out channels and groups (depthwise stays depthwise), BatchNorm
// num_features, Linear in/out features, LayerNorm normalized_shape, Embedding embedding_dim.
void update_module_metadata(torch::nn::Module& root);

}  // namespace libprune::layers
