#pragma once
// BERT for sequence classification with Hugging Face's module tree, so parameter names and shapes
// are transformers' BertForSequenceClassification exactly (bert.encoder.layer.0.attention.self.
// query.weight, ..., classifier.weight) and a state_dict moves between the two unchanged.
//
// Heads are pruning units through the dependency graph (q, k, v rows and the attention output's
// columns, one head at a time); each layer's head count is read from its query rows, so a cut
// needs no metadata update and the head size stays.
// Feed-forward neurons (intermediate.dense rows with output.dense columns) are units too. The
// hidden size is pinned unless the pruner's prune_hidden is set.
#include "libprune/models/model.h"

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace libprune::models {

// Layer index -> the original indices of its removed heads (transformers' config.pruned_heads).
using HeadMap = std::map<int64_t, std::vector<int64_t>>;

// transformers' BertConfig fields (the subset BERT uses for classification), same names.
struct BertConfig {
  TORCH_ARG(int64_t, vocab_size) = 30522;
  TORCH_ARG(int64_t, hidden_size) = 768;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 12;
  TORCH_ARG(int64_t, intermediate_size) = 3072;
  TORCH_ARG(double, hidden_dropout_prob) = 0.1;
  TORCH_ARG(double, attention_probs_dropout_prob) = 0.1;
  TORCH_ARG(int64_t, max_position_embeddings) = 512;
  TORCH_ARG(int64_t, type_vocab_size) = 2;
  TORCH_ARG(double, layer_norm_eps) = 1e-12;
  TORCH_ARG(int64_t, num_labels) = 2;
  TORCH_ARG(int64_t, pad_token_id) = 0;
  // transformers' pruned_heads: the model is built with these heads removed, as from_pretrained
  // does (each layer keeps num_attention_heads minus its list, in the original order).
  TORCH_ARG(HeadMap, pruned_heads);
  // libprune's own key for a feed-forward width per layer (FFN pruning that is not uniform);
  // empty: every layer has intermediate_size. transformers cannot load a non-uniform FFN.
  TORCH_ARG(std::vector<int64_t>, intermediate_sizes);

 public:

  // BERT-mini (Turc et al. 2019): 4 layers, hidden 256, 4 heads of 64, FFN 1024 (~11M parameters
  // with a 30k vocabulary, ~5M with 8k).
  static BertConfig mini();
  // Throws naming the field and the fix (a positive size, heads dividing the hidden size, ...).
  void validate() const;
  // Heads and feed-forward width of layer `i` as built (after pruned_heads, intermediate_sizes).
  int64_t heads_of(int64_t i) const;
  int64_t intermediate_of(int64_t i) const;
  // transformers' config.json form (model_type "bert", architectures, hidden_act "gelu", ...).
  std::string to_json() const;
  // Reads config.json text; unknown keys are ignored as transformers does, a missing key keeps
  // its default, a wrong type names the key.
  static BertConfig from_json(const std::string& text);
};

class BertEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit BertEmbeddingsImpl(const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids);
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT: Hugging Face's name
  double dropout;
};
TORCH_MODULE(BertEmbeddings);

// attention.self: the head size is fixed at construction; the head count follows the query rows, so
// a cut that removes whole heads needs no metadata update (transformers' attribute names).
class BertSelfAttentionImpl : public torch::nn::Module {
 public:
  // `heads` of the configured head size (hidden_size / num_attention_heads); -1: all of them.
  explicit BertSelfAttentionImpl(const BertConfig& c, int64_t heads = -1);
  // hidden [B, T, H]; mask_bias [B, 1, 1, T] added to the scores (0 where attended).
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& mask_bias);
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  int64_t num_attention_heads() const { return all_head_size() / attention_head_size; }
  int64_t all_head_size() const { return query->weight.size(0); }
  int64_t attention_head_size;
  double dropout;
};
TORCH_MODULE(BertSelfAttention);

// dense, dropout, LayerNorm(x + residual): attention.output and output share this form.
class BertResidualOutputImpl : public torch::nn::Module {
 public:
  BertResidualOutputImpl(int64_t in, int64_t hidden, const BertConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& residual);
  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT: Hugging Face's name
  double dropout;
};
TORCH_MODULE(BertResidualOutput);

class BertAttentionImpl : public torch::nn::Module {
 public:
  explicit BertAttentionImpl(const BertConfig& c, int64_t heads = -1);
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& mask_bias);
  BertSelfAttention self{nullptr};
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertAttention);

class BertLayerImpl : public torch::nn::Module {
 public:
  // Layer `index` of the config (its heads_of and intermediate_of).
  explicit BertLayerImpl(const BertConfig& c, int64_t index = 0);
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& mask_bias);
  BertAttention attention{nullptr};
  torch::nn::Linear intermediate_dense{nullptr};  // registered as intermediate.dense
  BertResidualOutput output{nullptr};
};
TORCH_MODULE(BertLayer);

class BertForSequenceClassificationImpl : public ModelImpl {
 public:
  explicit BertForSequenceClassificationImpl(BertConfig config);
  // input_ids alone: every token attended, token type 0.
  torch::Tensor forward(torch::Tensor input_ids) override;
  // Reads input_ids and, when present, attention_mask (1 attended, 0 padding) and token_type_ids.
  torch::Tensor forward_inputs(const nn::Inputs& inputs) override;
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                        const torch::Tensor& token_type_ids);

  // The configuration it was built with; head counts and intermediate sizes of a pruned model are
  // the layers' own (heads_per_layer(), intermediate_sizes()).
  BertConfig config;
  std::vector<int64_t> heads_per_layer() const;
  std::vector<int64_t> intermediate_sizes() const;

  BertEmbeddings embeddings{nullptr};
  torch::nn::ModuleList layers{nullptr};  // registered as bert.encoder.layer
  torch::nn::Linear pooler{nullptr};      // bert.pooler.dense
  torch::nn::Linear classifier{nullptr};

 private:
  BertLayerImpl& layer(size_t i) const;
};
TORCH_MODULE(BertForSequenceClassification);

// "bert_tiny" (2 layers, 128 hidden, 2 heads), "bert_mini", "bert_small" (4, 512, 8), "bert_base"
// (12, 768, 12): the sizes of Turc et al.'s compact BERTs and BERT-base.
BertConfig bert_config(const std::string& size);

}  // namespace libprune::models
