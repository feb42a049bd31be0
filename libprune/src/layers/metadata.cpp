#include "libprune/layers/metadata.h"

namespace libprune::layers {
namespace {

template <typename ConvImpl>
bool update_conv(torch::nn::Module& m) {
  auto* conv = m.as<ConvImpl>();
  if (!conv) return false;
  auto& o = conv->options;
  const auto& w = conv->weight;
  const bool depthwise = o.groups() > 1 && o.groups() == o.in_channels() && o.groups() == o.out_channels();
  if (depthwise) o.groups(w.size(0));
  if (o.transposed()) {
    o.in_channels(w.size(0));
    o.out_channels(w.size(1) * o.groups());
  } else {
    o.out_channels(w.size(0));
    o.in_channels(w.size(1) * o.groups());
  }
  return true;
}

template <typename BatchNormImpl>
bool update_bn(torch::nn::Module& m) {
  auto* bn = m.as<BatchNormImpl>();
  if (!bn) return false;
  const auto& t = bn->running_mean.defined() ? bn->running_mean : bn->weight;
  if (t.defined()) bn->options.num_features(t.size(0));
  return true;
}

}  // namespace

void update_module_metadata(torch::nn::Module& root) {
  for (const auto& child : root.modules(/*include_self=*/true)) {
    auto& m = *child;
    if (update_conv<torch::nn::Conv1dImpl>(m) || update_conv<torch::nn::Conv2dImpl>(m) ||
        update_conv<torch::nn::Conv3dImpl>(m) || update_conv<torch::nn::ConvTranspose2dImpl>(m) ||
        update_bn<torch::nn::BatchNorm1dImpl>(m) || update_bn<torch::nn::BatchNorm2dImpl>(m) ||
        update_bn<torch::nn::BatchNorm3dImpl>(m)) {
      continue;
    }
    if (auto* linear = m.as<torch::nn::Linear>()) {
      linear->options.in_features(linear->weight.size(1));
      linear->options.out_features(linear->weight.size(0));
    } else if (auto* ln = m.as<torch::nn::LayerNorm>()) {
      if (ln->weight.defined()) ln->options.normalized_shape({ln->weight.size(0)});
    } else if (auto* emb = m.as<torch::nn::Embedding>()) {
      emb->options.embedding_dim(emb->weight.size(1));
    }
  }
}

}  // namespace libprune::layers
