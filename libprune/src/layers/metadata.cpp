#include "libprune/layers/metadata.h"

#include "libprune/nn/attention.h"
#include "libprune/options.h"

#include <mutex>

namespace libprune::layers {
namespace {

const std::vector<int64_t>& shape_of(const std::string& kind, const Shapes& tensors, const char* name) {
  auto it = tensors.find(name);
  TORCH_CHECK_VALUE(it != tensors.end() && !it->second.empty(), "layer_attributes(\"", kind, "\"): needs the shape of '",
                    name, "'. Fix: pass it in tensors");
  return it->second;
}

int64_t current_of(const std::string& kind, const Attributes& current, const char* name) {
  auto it = current.find(name);
  TORCH_CHECK_VALUE(it != current.end(), "layer_attributes(\"", kind, "\"): needs the current '", name,
                    "'. Fix: pass it in current");
  return it->second;
}

Attributes conv(const std::string& kind, const Attributes& current, const Shapes& tensors) {
  const auto& w = shape_of(kind, tensors, "weight");
  int64_t groups = current_of(kind, current, "groups");
  const bool depthwise = groups > 1 && groups == current_of(kind, current, "in_channels") &&
                         groups == current_of(kind, current, "out_channels");
  if (depthwise) groups = w[0];
  if (kind == "conv_transpose") return {{"groups", groups}, {"in_channels", w[0]}, {"out_channels", w[1] * groups}};
  return {{"groups", groups}, {"out_channels", w[0]}, {"in_channels", w[1] * groups}};
}

// Whole heads go, so the head size stays and the count follows the query rows.
Attributes heads(const std::string& kind, const Attributes& current, const Shapes& tensors) {
  const int64_t head_dim = current_of(kind, current, "head_dim");
  TORCH_CHECK_VALUE(head_dim > 0, "layer_attributes(\"heads\"): head_dim must be > 0, got ", head_dim);
  Attributes out;
  if (auto q = tensors.find("q"); q != tensors.end()) {
    out["num_heads"] = q->second.at(0) / head_dim;
    if (q->second.size() > 1) out["embed_dim"] = q->second[1];
  } else {
    out["num_heads"] = shape_of(kind, tensors, "qkv").at(0) / (3 * head_dim);
  }
  out["all_head_size"] = out["num_heads"] * head_dim;
  return out;
}

using KindRule = Attributes (*)(const std::string&, const Attributes&, const Shapes&);

const std::map<std::string, KindRule>& kind_rules() {
  static const std::map<std::string, KindRule> table{
      {"conv", conv},
      {"conv_transpose", conv},
      {"norm",
       [](const std::string& k, const Attributes&, const Shapes& t) -> Attributes {
         return {{"num_features", shape_of(k, t, t.count("running_mean") ? "running_mean" : "weight")[0]}};
       }},
      {"group_norm", [](const std::string& k, const Attributes&, const Shapes& t) -> Attributes {
         return {{"num_channels", shape_of(k, t, "weight")[0]}};
       }},
      {"linear", [](const std::string& k, const Attributes&, const Shapes& t) -> Attributes {
         const auto& w = shape_of(k, t, "weight");
         return {{"in_features", w.at(1)}, {"out_features", w[0]}};
       }},
      {"layer_norm", [](const std::string& k, const Attributes&, const Shapes& t) -> Attributes {
         return {{"normalized_shape", shape_of(k, t, "weight")[0]}};
       }},
      {"embedding", [](const std::string& k, const Attributes&, const Shapes& t) -> Attributes {
         return {{"embedding_dim", shape_of(k, t, "weight").at(1)}};
       }},
      {"prelu", [](const std::string& k, const Attributes&, const Shapes& t) -> Attributes {
         return {{"num_parameters", shape_of(k, t, "weight")[0]}};
       }},
      {"heads", heads}};
  return table;
}

std::vector<int64_t> shape(const torch::Tensor& t) { return t.defined() ? t.sizes().vec() : std::vector<int64_t>{}; }

template <typename ConvImpl>
bool update_conv(torch::nn::Module& m) {
  auto* c = m.as<ConvImpl>();
  if (!c) return false;
  auto& o = c->options;
  const auto a = layer_attributes(o.transposed() ? "conv_transpose" : "conv",
                                  {{"groups", o.groups()}, {"in_channels", o.in_channels()}, {"out_channels", o.out_channels()}},
                                  {{"weight", shape(c->weight)}});
  o.groups(a.at("groups")).in_channels(a.at("in_channels")).out_channels(a.at("out_channels"));
  return true;
}

template <typename BatchNormImpl>
bool update_bn(torch::nn::Module& m) {
  auto* bn = m.as<BatchNormImpl>();
  if (!bn) return false;
  Shapes t;
  if (bn->running_mean.defined()) t["running_mean"] = shape(bn->running_mean);
  if (bn->weight.defined()) t["weight"] = shape(bn->weight);
  if (!t.empty()) bn->options.num_features(layer_attributes("norm", {}, t).at("num_features"));
  return true;
}

bool update_linear(torch::nn::Module& m) {
  auto* linear = m.as<torch::nn::Linear>();
  if (!linear) return false;
  const auto a = layer_attributes("linear", {}, {{"weight", shape(linear->weight)}});
  linear->options.in_features(a.at("in_features")).out_features(a.at("out_features"));
  return true;
}

bool update_layer_norm(torch::nn::Module& m) {
  auto* ln = m.as<torch::nn::LayerNorm>();
  if (!ln) return false;
  if (ln->weight.defined()) {
    ln->options.normalized_shape({layer_attributes("layer_norm", {}, {{"weight", shape(ln->weight)}}).at("normalized_shape")});
  }
  return true;
}

bool update_embedding(torch::nn::Module& m) {
  auto* emb = m.as<torch::nn::Embedding>();
  if (!emb) return false;
  emb->options.embedding_dim(layer_attributes("embedding", {}, {{"weight", shape(emb->weight)}}).at("embedding_dim"));
  return true;
}

bool update_attention(torch::nn::Module& m) {
  auto* attn = m.as<nn::MultiheadSelfAttentionImpl>();
  if (!attn) return false;
  const auto a = layer_attributes("heads", {{"head_dim", attn->options.head_dim()}}, {{"q", shape(attn->q_proj->weight)}});
  attn->options.num_heads(a.at("num_heads")).embed_dim(a.at("embed_dim"));
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

Attributes layer_attributes(const std::string& kind, const Attributes& current, const Shapes& tensors) {
  auto it = kind_rules().find(kind);
  TORCH_CHECK_VALUE(it != kind_rules().end(), "layer_attributes: unknown layer kind \"", kind, "\"; expected one of ",
                    options::join(layer_kinds()));
  return it->second(kind, current, tensors);
}

std::vector<std::string> layer_kinds() {
  std::vector<std::string> out;
  for (const auto& [k, r] : kind_rules()) out.push_back(k);
  return out;
}

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
