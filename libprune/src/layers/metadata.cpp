#include "libprune/layers/metadata.h"

#include "libprune/nn/attention.h"

#include <mutex>
#include <vector>

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

bool update_linear(torch::nn::Module& m) {
  auto* linear = m.as<torch::nn::Linear>();
  if (!linear) return false;
  linear->options.in_features(linear->weight.size(1));
  linear->options.out_features(linear->weight.size(0));
  return true;
}

bool update_layer_norm(torch::nn::Module& m) {
  auto* ln = m.as<torch::nn::LayerNorm>();
  if (!ln) return false;
  if (ln->weight.defined()) ln->options.normalized_shape({ln->weight.size(0)});
  return true;
}

bool update_embedding(torch::nn::Module& m) {
  auto* emb = m.as<torch::nn::Embedding>();
  if (!emb) return false;
  emb->options.embedding_dim(emb->weight.size(1));
  return true;
}

// Whole heads go, so the head size stays and the count follows q_proj's rows.
bool update_attention(torch::nn::Module& m) {
  auto* attn = m.as<nn::MultiheadSelfAttentionImpl>();
  if (!attn) return false;
  attn->options.num_heads(attn->q_proj->weight.size(0) / attn->options.head_dim());
  attn->options.embed_dim(attn->q_proj->weight.size(1));
  return true;
}

std::vector<MetadataRule>& rules() {
  static std::vector<MetadataRule> table{
      update_conv<torch::nn::Conv1dImpl>,          update_conv<torch::nn::Conv2dImpl>,
      update_conv<torch::nn::Conv3dImpl>,          update_conv<torch::nn::ConvTranspose1dImpl>,
      update_conv<torch::nn::ConvTranspose2dImpl>, update_conv<torch::nn::ConvTranspose3dImpl>,
      update_bn<torch::nn::BatchNorm1dImpl>,       update_bn<torch::nn::BatchNorm2dImpl>,
      update_bn<torch::nn::BatchNorm3dImpl>,       update_linear,
      update_layer_norm,                           update_embedding,
      update_attention};
  return table;
}

std::mutex& rules_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

void add_metadata_rule(MetadataRule rule) {
  TORCH_CHECK_VALUE(rule, "add_metadata_rule: the rule is empty. Fix: pass a callable");
  std::lock_guard<std::mutex> lock(rules_mutex());
  rules().insert(rules().begin(), std::move(rule));
}

void update_module_metadata(torch::nn::Module& root) {
  std::vector<MetadataRule> table;
  {
    std::lock_guard<std::mutex> lock(rules_mutex());
    table = rules();
  }
  for (const auto& child : root.modules(/*include_self=*/true)) {
    for (const auto& rule : table) {
      if (rule(*child)) break;
    }
  }
}

}  // namespace libprune::layers
