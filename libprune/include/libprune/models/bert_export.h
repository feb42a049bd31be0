#pragma once
// A pruned BERT in Hugging Face's form, and back.
//
//   save_pretrained(*model, "out/hf", plans);   // config.json + pytorch_model.bin
//   auto again = load_pretrained("out/hf");     // the same shapes and logits
//
// config.json keeps the *original* num_attention_heads and lists the removed heads per layer in
// pruned_heads (original indices), so transformers 4.x's from_pretrained rebuilds the same
// shapes through its prune_heads. A feed-forward width that every layer shares is written as
// intermediate_size; widths that differ by layer go in libprune_intermediate_sizes, which only
// libprune's loader reads (transformers has no per-layer FFN width).
//
// transformers' prune_heads (chosen heads, not a ratio) is Pruner::remove_units for any model:
// {"bert.encoder.layer.0.attention.self.query": {1, 3}}, in place, with AdamW's moments.
#include "libprune/layers/plan.h"
#include "libprune/models/bert.h"

#include <string>
#include <vector>

namespace libprune::models {

// The original indices of the heads each layer has lost: the model's config.pruned_heads (what it
// was built without), followed through `plans`, the plans applied since it was built (a run's
// plan history, Pruner::history()). Throws when the plans do not account for the model's head
// counts, or when the hidden size was cut (no Hugging Face form exists for that).
HeadMap pruned_heads_of(const BertForSequenceClassificationImpl& model, const std::vector<layers::PruningPlan>& plans = {});

// The config.json of the model as it is now (pruned heads, feed-forward widths, labels, vocabulary).
BertConfig pretrained_config(const BertForSequenceClassificationImpl& model,
                             const std::vector<layers::PruningPlan>& plans = {});

// Writes <dir>/config.json and <dir>/pytorch_model.bin (a torch.save dict, the model's state_dict
// under transformers' names), each atomically. Returns the config written.
BertConfig save_pretrained(const BertForSequenceClassificationImpl& model, const std::string& dir,
                           const std::vector<layers::PruningPlan>& plans = {});

// Builds the model config.json describes (pruned heads removed) and loads the weights. Throws
// naming the file and the fix when either is missing or malformed, or when the weights do not fit
// the config (nothing is returned half-loaded).
BertForSequenceClassification load_pretrained(const std::string& dir);

}  // namespace libprune::models
