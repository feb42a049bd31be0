#pragma once
// Module metadata after a cut: C++ options follow the (already shrunk) tensors. One small rule per
// module type, kept in a table that users extend for modules of their own (a head count, say).
#include <torch/torch.h>

#include <functional>

namespace libprune::layers {

// Returns true when it recognised the module (and updated it); later rules are then skipped.
using MetadataRule = std::function<bool(torch::nn::Module&)>;

// Adds a rule, tried before the built-in ones: Conv/ConvTranspose in/out channels and groups
// (depthwise stays depthwise), BatchNorm num_features, Linear in/out features, LayerNorm
// normalized_shape, Embedding embedding_dim, and libprune's MultiheadSelfAttention num_heads.
void add_metadata_rule(MetadataRule rule);

// Applies the rules to every module under `root` (root included).
void update_module_metadata(torch::nn::Module& root);

}  // namespace libprune::layers
