#include "libprune/models/bert.h"

#include "libprune/nn/call.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <set>

namespace libprune::models {
namespace {

torch::nn::Linear bert_linear(int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out)); }

torch::nn::LayerNorm bert_layer_norm(const BertConfig& c) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size()}).eps(c.layer_norm_eps()));
}

// A module with no code of its own, holding children under Hugging Face's path (bert, encoder, ...).
std::shared_ptr<torch::nn::Module> bert_folder(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

torch::Tensor bert_dropout(const torch::Tensor& x, double p, bool training) {
  return p > 0 && training ? torch::dropout(x, p, true) : x;
}

// transformers' _init_weights: linear and embedding weights from N(0, std), zero biases, layer
// norms at 1 and 0, the padding token's embedding zero.
void init_like_transformers(torch::nn::Module& model, double std) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* l = m->as<torch::nn::Linear>()) {
      l->weight.normal_(0, std);
      if (l->bias.defined()) l->bias.zero_();
    } else if (auto* e = m->as<torch::nn::Embedding>()) {
      e->weight.normal_(0, std);
      if (e->options.padding_idx()) e->weight[*e->options.padding_idx()].zero_();
    } else if (auto* n = m->as<torch::nn::LayerNorm>()) {
      n->weight.fill_(1);
      n->bias.zero_();
    }
  }
}

}  // namespace

BertConfig BertConfig::mini() {
  return BertConfig().hidden_size(256).num_hidden_layers(4).num_attention_heads(4).intermediate_size(1024);
}

void BertConfig::validate() const {
  auto positive = [](const char* key, int64_t v) {
    TORCH_CHECK_VALUE(v > 0, "BertConfig: ", key, " must be positive, got ", v, ". Fix: set ", key, " in config.json");
  };
  positive("vocab_size", vocab_size());
  positive("hidden_size", hidden_size());
  positive("num_hidden_layers", num_hidden_layers());
  positive("num_attention_heads", num_attention_heads());
  positive("intermediate_size", intermediate_size());
  positive("max_position_embeddings", max_position_embeddings());
  positive("type_vocab_size", type_vocab_size());
  positive("num_labels", num_labels());
  TORCH_CHECK_VALUE(hidden_size() % num_attention_heads() == 0, "BertConfig: hidden_size (", hidden_size(),
                    ") must be a multiple of num_attention_heads (", num_attention_heads(),
                    "). Fix: pick a head count that divides the hidden size");
  for (auto [key, p] : {std::pair{"hidden_dropout_prob", hidden_dropout_prob()},
                        std::pair{"attention_probs_dropout_prob", attention_probs_dropout_prob()}}) {
    TORCH_CHECK_VALUE(p >= 0 && p < 1, "BertConfig: ", key, " must be in [0, 1), got ", p);
  }
  TORCH_CHECK_VALUE(layer_norm_eps() > 0, "BertConfig: layer_norm_eps must be positive, got ", layer_norm_eps());
  TORCH_CHECK_VALUE(pad_token_id() >= 0 && pad_token_id() < vocab_size(), "BertConfig: pad_token_id (", pad_token_id(),
                    ") must be a token id below vocab_size (", vocab_size(), ")");
  for (const auto& [layer, heads] : pruned_heads()) {
    TORCH_CHECK_VALUE(layer >= 0 && layer < num_hidden_layers(), "BertConfig: pruned_heads names layer ", layer,
                      ", but the model has ", num_hidden_layers(), " layers. Fix: layer indices in [0, ",
                      num_hidden_layers(), ")");
    std::set<int64_t> distinct;
    for (const auto h : heads) {
      TORCH_CHECK_VALUE(h >= 0 && h < num_attention_heads(), "BertConfig: pruned_heads of layer ", layer, " names head ",
                        h, ", but layers have ", num_attention_heads(), " heads (num_attention_heads counts the ",
                        "heads before pruning)");
      distinct.insert(h);
    }
    TORCH_CHECK_VALUE(static_cast<int64_t>(distinct.size()) < num_attention_heads(), "BertConfig: pruned_heads removes ",
                      "every head of layer ", layer, ". Fix: keep at least one head per layer");
  }
  if (!intermediate_sizes().empty()) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(intermediate_sizes().size()) == num_hidden_layers(),
                      "BertConfig: intermediate_sizes has ", intermediate_sizes().size(), " entries for ",
                      num_hidden_layers(), " layers. Fix: one feed-forward width per layer, or none");
    for (const auto w : intermediate_sizes()) {
      TORCH_CHECK_VALUE(w > 0, "BertConfig: intermediate_sizes must be positive, got ", w);
    }
  }
}

int64_t BertConfig::heads_of(int64_t i) const {
  const auto it = pruned_heads().find(i);
  if (it == pruned_heads().end()) return num_attention_heads();
  return num_attention_heads() - static_cast<int64_t>(std::set<int64_t>(it->second.begin(), it->second.end()).size());
}

int64_t BertConfig::intermediate_of(int64_t i) const {
  return intermediate_sizes().empty() ? intermediate_size() : intermediate_sizes().at(static_cast<size_t>(i));
}

std::string BertConfig::to_json() const {
  nlohmann::ordered_json j;
  j["architectures"] = {"BertForSequenceClassification"};
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size();
  j["hidden_size"] = hidden_size();
  j["num_hidden_layers"] = num_hidden_layers();
  j["num_attention_heads"] = num_attention_heads();
  j["intermediate_size"] = intermediate_size();
  j["hidden_act"] = "gelu";
  j["hidden_dropout_prob"] = hidden_dropout_prob();
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob();
  j["max_position_embeddings"] = max_position_embeddings();
  j["type_vocab_size"] = type_vocab_size();
  j["layer_norm_eps"] = layer_norm_eps();
  j["num_labels"] = num_labels();
  j["pad_token_id"] = pad_token_id();
  j["position_embedding_type"] = "absolute";
  if (!pruned_heads().empty()) {
    auto& heads = j["pruned_heads"] = nlohmann::ordered_json::object();
    for (const auto& [layer, list] : pruned_heads()) heads[std::to_string(layer)] = list;
  }
  if (!intermediate_sizes().empty()) j["libprune_intermediate_sizes"] = intermediate_sizes();
  return j.dump(2);
}

BertConfig BertConfig::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    TORCH_CHECK_VALUE(false, "BertConfig: config.json is not JSON: ", e.what());
  }
  TORCH_CHECK_VALUE(j.is_object(), "BertConfig: config.json must hold an object, got ", j.type_name());
  BertConfig c;
  auto integer = [&](const char* key, int64_t& field) {
    if (!j.contains(key)) return;
    TORCH_CHECK_VALUE(j[key].is_number_integer(), "BertConfig: \"", key, "\" must be an integer, got ", j[key].dump());
    field = j[key].get<int64_t>();
  };
  auto real = [&](const char* key, double& field) {
    if (!j.contains(key)) return;
    TORCH_CHECK_VALUE(j[key].is_number(), "BertConfig: \"", key, "\" must be a number, got ", j[key].dump());
    field = j[key].get<double>();
  };
  integer("vocab_size", c.vocab_size_);
  integer("hidden_size", c.hidden_size_);
  integer("num_hidden_layers", c.num_hidden_layers_);
  integer("num_attention_heads", c.num_attention_heads_);
  integer("intermediate_size", c.intermediate_size_);
  integer("max_position_embeddings", c.max_position_embeddings_);
  integer("type_vocab_size", c.type_vocab_size_);
  integer("pad_token_id", c.pad_token_id_);
  real("hidden_dropout_prob", c.hidden_dropout_prob_);
  real("attention_probs_dropout_prob", c.attention_probs_dropout_prob_);
  real("layer_norm_eps", c.layer_norm_eps_);
  if (j.contains("num_labels")) {
    integer("num_labels", c.num_labels_);
  } else if (j.contains("id2label") && j["id2label"].is_object()) {
    c.num_labels(static_cast<int64_t>(j["id2label"].size()));  // transformers derives it so
  }
  if (j.contains("pruned_heads")) {
    const auto& heads = j["pruned_heads"];
    TORCH_CHECK_VALUE(heads.is_object(), "BertConfig: \"pruned_heads\" must map layer indices to head lists, got ",
                      heads.dump());
    for (const auto& [key, list] : heads.items()) {
      int64_t layer = -1;
      try {
        size_t used = 0;
        layer = std::stoll(key, &used);
        if (used != key.size()) layer = -1;
      } catch (const std::exception&) {
      }
      TORCH_CHECK_VALUE(layer >= 0, "BertConfig: pruned_heads key \"", key, "\" is not a layer index");
      TORCH_CHECK_VALUE(list.is_array(), "BertConfig: pruned_heads[\"", key, "\"] must be a list of head indices, got ",
                        list.dump());
      auto& out = c.pruned_heads_[layer];
      for (const auto& h : list) {
        TORCH_CHECK_VALUE(h.is_number_integer(), "BertConfig: pruned_heads[\"", key, "\"] holds ", h.dump(),
                          ", not a head index");
        out.push_back(h.get<int64_t>());
      }
    }
  }
  if (j.contains("libprune_intermediate_sizes")) {
    const auto& sizes = j["libprune_intermediate_sizes"];
    TORCH_CHECK_VALUE(sizes.is_array(), "BertConfig: \"libprune_intermediate_sizes\" must be a list, got ", sizes.dump());
    for (const auto& w : sizes) {
      TORCH_CHECK_VALUE(w.is_number_integer(), "BertConfig: libprune_intermediate_sizes holds ", w.dump(),
                        ", not a width");
      c.intermediate_sizes_.push_back(w.get<int64_t>());
    }
  }
  if (j.contains("hidden_act")) {
    TORCH_CHECK_VALUE(j["hidden_act"] == "gelu", "BertConfig: hidden_act ", j["hidden_act"].dump(),
                      " is not supported. Fix: \"gelu\" (the erf form BERT uses)");
  }
  if (j.contains("position_embedding_type")) {
    TORCH_CHECK_VALUE(j["position_embedding_type"] == "absolute", "BertConfig: position_embedding_type ",
                      j["position_embedding_type"].dump(), " is not supported. Fix: \"absolute\"");
  }
  c.validate();
  return c;
}

BertConfig bert_config(const std::string& size) {
  const auto base = BertConfig();
  if (size == "bert_tiny") return BertConfig().hidden_size(128).num_hidden_layers(2).num_attention_heads(2).intermediate_size(512);
  if (size == "bert_mini") return BertConfig::mini();
  if (size == "bert_small") return BertConfig().hidden_size(512).num_hidden_layers(4).num_attention_heads(8).intermediate_size(2048);
  if (size == "bert_base") return base;
  TORCH_CHECK_VALUE(false, "bert_config: unknown size \"", size, "\"; expected bert_tiny, bert_mini, bert_small or bert_base");
}

BertEmbeddingsImpl::BertEmbeddingsImpl(const BertConfig& c) : dropout(c.hidden_dropout_prob()) {
  word_embeddings = register_module(
      "word_embeddings", torch::nn::Embedding(torch::nn::EmbeddingOptions(c.vocab_size(), c.hidden_size()).padding_idx(c.pad_token_id())));
  position_embeddings = register_module("position_embeddings", torch::nn::Embedding(c.max_position_embeddings(), c.hidden_size()));
  token_type_embeddings = register_module("token_type_embeddings", torch::nn::Embedding(c.type_vocab_size(), c.hidden_size()));
  LayerNorm = register_module("LayerNorm", bert_layer_norm(c));
}

torch::Tensor BertEmbeddingsImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids) {
  const int64_t tokens = input_ids.size(1), table = position_embeddings->weight.size(0);
  TORCH_CHECK_VALUE(tokens <= table, "BERT: the batch has sequences of ", tokens,
                    " tokens, longer than the position table (max_position_embeddings ", table,
                    "). Fix: truncate the text (the data's max_length) or build the model with more positions");
  const auto positions = torch::arange(tokens, input_ids.options().dtype(torch::kLong)).unsqueeze(0);
  auto x = word_embeddings->forward(input_ids) + position_embeddings->forward(positions) +
           token_type_embeddings->forward(token_type_ids);
  return bert_dropout(nn::call(LayerNorm, x), dropout, is_training());
}

BertSelfAttentionImpl::BertSelfAttentionImpl(const BertConfig& c, int64_t heads)
    : attention_head_size(c.hidden_size() / c.num_attention_heads()), dropout(c.attention_probs_dropout_prob()) {
  const int64_t rows = (heads < 0 ? c.num_attention_heads() : heads) * attention_head_size;
  query = register_module("query", bert_linear(c.hidden_size(), rows));
  key = register_module("key", bert_linear(c.hidden_size(), rows));
  value = register_module("value", bert_linear(c.hidden_size(), rows));
}

torch::Tensor BertSelfAttentionImpl::forward(const torch::Tensor& hidden, const torch::Tensor& mask_bias) {
  const int64_t b = hidden.size(0), t = hidden.size(1), h = num_attention_heads(), d = attention_head_size;
  auto heads = [&](const torch::Tensor& y) { return y.view({b, t, h, d}).permute({0, 2, 1, 3}); };
  const auto q = heads(nn::call(query, hidden));
  const auto k = heads(nn::call(key, hidden));
  const auto v = heads(nn::call(value, hidden));
  auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d));
  if (mask_bias.defined()) scores = scores + mask_bias;
  const auto probs = bert_dropout(torch::softmax(scores, -1), dropout, is_training());
  return torch::matmul(probs, v).permute({0, 2, 1, 3}).reshape({b, t, h * d});
}

BertResidualOutputImpl::BertResidualOutputImpl(int64_t in, int64_t hidden, const BertConfig& c)
    : dropout(c.hidden_dropout_prob()) {
  dense = register_module("dense", bert_linear(in, hidden));
  LayerNorm = register_module("LayerNorm", bert_layer_norm(c));
}

torch::Tensor BertResidualOutputImpl::forward(const torch::Tensor& x, const torch::Tensor& residual) {
  return nn::call(LayerNorm, bert_dropout(nn::call(dense, x), dropout, is_training()) + residual);
}

BertAttentionImpl::BertAttentionImpl(const BertConfig& c, int64_t heads) {
  self = register_module("self", BertSelfAttention(c, heads));
  output = register_module("output", BertResidualOutput(self->all_head_size(), c.hidden_size(), c));
}

torch::Tensor BertAttentionImpl::forward(const torch::Tensor& hidden, const torch::Tensor& mask_bias) {
  return output->forward(self->forward(hidden, mask_bias), hidden);
}

BertLayerImpl::BertLayerImpl(const BertConfig& c, int64_t index) {
  attention = register_module("attention", BertAttention(c, c.heads_of(index)));
  const int64_t width = c.intermediate_of(index);
  intermediate_dense = bert_folder(*this, "intermediate")->register_module("dense", bert_linear(c.hidden_size(), width));
  output = register_module("output", BertResidualOutput(width, c.hidden_size(), c));
}

torch::Tensor BertLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& mask_bias) {
  const auto attended = attention->forward(hidden, mask_bias);
  return output->forward(torch::gelu(nn::call(intermediate_dense, attended)), attended);
}

BertForSequenceClassificationImpl::BertForSequenceClassificationImpl(BertConfig c) : config(std::move(c)) {
  config.validate();
  auto bert = bert_folder(*this, "bert");
  embeddings = bert->register_module("embeddings", BertEmbeddings(config));
  layers = bert_folder(*bert, "encoder")->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers(); ++i) layers->push_back(BertLayer(config, i));
  pooler = bert_folder(*bert, "pooler")->register_module("dense", bert_linear(config.hidden_size(), config.hidden_size()));
  classifier = register_module("classifier", bert_linear(config.hidden_size(), config.num_labels()));
  init_like_transformers(*this, 0.02);
}

BertLayerImpl& BertForSequenceClassificationImpl::layer(size_t i) const { return *layers->ptr<BertLayerImpl>(i); }

torch::Tensor BertForSequenceClassificationImpl::forward(torch::Tensor input_ids) { return forward(input_ids, {}, {}); }

torch::Tensor BertForSequenceClassificationImpl::forward_inputs(const nn::Inputs& inputs) {
  auto optional = [&](const char* name) { return inputs.has(name) ? inputs.at(name) : torch::Tensor(); };
  return forward(inputs.at("input_ids"), optional("attention_mask"), optional("token_type_ids"));
}

torch::Tensor BertForSequenceClassificationImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                                         const torch::Tensor& token_type_ids) {
  TORCH_CHECK_VALUE(input_ids.dim() == 2 && !input_ids.is_floating_point(),
                    "BERT: input_ids must be integer token ids [batch, tokens], got ", input_ids.sizes(), " ",
                    input_ids.scalar_type());
  const auto types = token_type_ids.defined() ? token_type_ids : torch::zeros_like(input_ids);
  auto hidden = embeddings->forward(input_ids, types);
  torch::Tensor mask_bias;
  if (attention_mask.defined()) {
    TORCH_CHECK_VALUE(attention_mask.sizes() == input_ids.sizes(), "BERT: attention_mask ", attention_mask.sizes(),
                      " must have input_ids' shape ", input_ids.sizes());
    // transformers' extended mask: 0 where attended, the dtype's lowest value on padding.
    const auto dtype = hidden.scalar_type();
    const double lowest = dtype == torch::kDouble  ? std::numeric_limits<double>::lowest()
                          : dtype == torch::kHalf  ? -65504.0
                          : dtype == torch::kBFloat16 ? static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest())
                                                     : std::numeric_limits<float>::lowest();
    mask_bias = (1.0 - attention_mask.to(hidden.dtype())).mul(lowest).view({input_ids.size(0), 1, 1, input_ids.size(1)});
  }
  for (size_t i = 0; i < layers->size(); ++i) hidden = layer(i).forward(hidden, mask_bias);
  const auto pooled = torch::tanh(nn::call(pooler, hidden.select(1, 0)));
  return nn::call(classifier, bert_dropout(pooled, config.hidden_dropout_prob(), is_training()));
}

std::vector<int64_t> BertForSequenceClassificationImpl::heads_per_layer() const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < layers->size(); ++i) out.push_back(layer(i).attention->self->num_attention_heads());
  return out;
}

std::vector<int64_t> BertForSequenceClassificationImpl::intermediate_sizes() const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < layers->size(); ++i) out.push_back(layer(i).intermediate_dense->weight.size(0));
  return out;
}

}  // namespace libprune::models
