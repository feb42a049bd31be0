#pragma once
// A tiny BERT, a padded text batch and a forward for the BERT tests.
#include "libprune/libprune.h"

#include <string>
#include <vector>

namespace bert_test {

using libprune::models::BertConfig;
using libprune::models::BertForSequenceClassification;

inline BertConfig tiny_config() {
  return BertConfig()
      .vocab_size(50)
      .hidden_size(32)
      .num_hidden_layers(2)
      .num_attention_heads(4)
      .intermediate_size(48)
      .max_position_embeddings(16)
      .num_labels(3)
      .hidden_dropout_prob(0)
      .attention_probs_dropout_prob(0);
}

inline libprune::nn::Inputs text_batch(int64_t batch, int64_t tokens, int64_t vocab, int64_t seed) {
  torch::manual_seed(seed);
  auto ids = torch::randint(1, vocab, {batch, tokens}, torch::kLong);
  auto mask = torch::ones({batch, tokens}, torch::kLong);
  mask.index_put_({0, torch::indexing::Slice(tokens - 2, torch::indexing::None)}, 0);  // padding in row 0
  ids.index_put_({0, torch::indexing::Slice(tokens - 2, torch::indexing::None)}, 0);
  return {{"input_ids", ids}, {"attention_mask", mask}};
}

inline libprune::graph::Forward forward_of(BertForSequenceClassification m, libprune::nn::Inputs in) {
  return [m, in]() mutable { return std::vector<torch::Tensor>{m->forward_inputs(in)}; };
}

inline std::string layer_name(int64_t i, const std::string& rest) { return "bert.encoder.layer." + std::to_string(i) + "." + rest; }

}  // namespace bert_test
