#pragma once
// Module metadata after a cut: layer attributes (in_channels, num_features, num_heads, ...) follow
// the (already shrunk) tensors. The rules live here, in C++, for both languages: C++ modules get
// them through update_module_metadata(); Python modules through the bindings (libprune/_layers.py
// reads a module's attributes, calls layer_attributes(), and writes the answer back).
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace libprune::layers {

using Attributes = std::map<std::string, int64_t>;
using Shapes = std::map<std::string, std::vector<int64_t>>;

// The attributes a layer of `kind` takes from its tensors' shapes (and its `current` attributes):
//   conv, conv_transpose  {groups, in_channels, out_channels} from weight (depthwise stays depthwise)
//   norm                  {num_features} from running_mean, else weight (batch and instance norms)
//   group_norm            {num_channels} from weight
//   linear                {in_features, out_features} from weight
//   layer_norm            {normalized_shape} from weight (one normalised dim)
//   embedding             {embedding_dim} from weight
//   prelu                 {num_parameters} from weight
//   heads                 {num_heads, all_head_size[, embed_dim]} from q ([heads x head_dim, embed_dim]) or qkv
//                         (3 x heads x head_dim rows), keeping head_dim: whole heads go
// Throws naming the kind and the fix when the kind is unknown or a tensor it needs is missing.
Attributes layer_attributes(const std::string& kind, const Attributes& current, const Shapes& tensors);
std::vector<std::string> layer_kinds();

// Returns true when it recognised the module (and updated it); later rules are then skipped.
using MetadataRule = std::function<bool(torch::nn::Module&)>;

// Adds a rule for C++ modules of your own, tried before the built-in ones (Conv/ConvTranspose,
// BatchNorm, Linear, LayerNorm, Embedding, libprune's MultiheadSelfAttention).
void add_metadata_rule(MetadataRule rule);

// Applies the rules to every module under `root` (root included).
void update_module_metadata(torch::nn::Module& root);

}  // namespace libprune::layers
