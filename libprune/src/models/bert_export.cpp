#include "libprune/models/bert_export.h"

#include "libprune/io/file.h"
#include "libprune/io/state_dict.h"
#include "libprune/nn/random_guard.h"

#include <algorithm>
#include <filesystem>
#include <set>

namespace libprune::models {
namespace {

namespace fs = std::filesystem;

std::string query_of(int64_t layer) { return "bert.encoder.layer." + std::to_string(layer) + ".attention.self.query.weight"; }

int64_t head_size(const BertConfig& c) { return c.hidden_size() / c.num_attention_heads(); }

// The original indices of the heads layer `l` was built with.
std::vector<int64_t> built_heads(const BertConfig& c, int64_t l) {
  std::set<int64_t> removed;
  if (const auto it = c.pruned_heads().find(l); it != c.pruned_heads().end()) removed.insert(it->second.begin(), it->second.end());
  std::vector<int64_t> ids;
  for (int64_t h = 0; h < c.num_attention_heads(); ++h) {
    if (!removed.count(h)) ids.push_back(h);
  }
  return ids;
}

}  // namespace

HeadMap pruned_heads_of(const BertForSequenceClassificationImpl& model, const std::vector<layers::PruningPlan>& plans) {
  const auto& c = model.config;
  const int64_t d = head_size(c);
  const int64_t hidden = model.embeddings->word_embeddings->weight.size(1);
  TORCH_CHECK_VALUE(hidden == c.hidden_size(), "save_pretrained: the hidden size was cut (", c.hidden_size(), " -> ",
                    hidden, "); Hugging Face's config ties the head size to it, so there is no from_pretrained form. "
                    "Fix: prune heads and feed-forward neurons only (prune_hidden off), or keep libprune's checkpoint");
  TORCH_CHECK_VALUE(model.pooler->weight.size(0) == hidden, "save_pretrained: the pooler was cut (",
                    model.pooler->weight.size(0), " of ", hidden, " outputs); Hugging Face's pooler keeps the hidden ",
                    "size. Fix: leave bert.pooler.dense out of the cut (ignored_layers, or an override of 0)");
  const auto counts = model.heads_per_layer();
  HeadMap out;
  for (int64_t l = 0; l < static_cast<int64_t>(counts.size()); ++l) {
    auto ids = built_heads(c, l);
    const std::string query = query_of(l);
    for (size_t p = 0; p < plans.size(); ++p) {
      for (const auto& cut : plans[p].cuts) {
        if (cut.tensor != query || cut.dim != 0) continue;
        TORCH_CHECK_VALUE(cut.original_size == static_cast<int64_t>(ids.size()) * d, "save_pretrained: plan ", p,
                          " cuts ", query, " from ", cut.original_size, " rows, but the plans before it leave ",
                          ids.size() * d, ". Fix: pass every plan applied since the model was built, in order");
        std::vector<int64_t> next;
        for (size_t k = 0; k < cut.keep.size(); k += static_cast<size_t>(d)) {
          const int64_t row = cut.keep[k];
          const bool whole = row % d == 0 && k + static_cast<size_t>(d) <= cut.keep.size() &&
                             cut.keep[k + static_cast<size_t>(d) - 1] == row + d - 1;
          TORCH_CHECK_VALUE(whole, "save_pretrained: plan ", p, " keeps part of a head in ", query,
                            " (row ", row, "); only whole heads have a Hugging Face form");
          next.push_back(ids[static_cast<size_t>(row / d)]);
        }
        ids = std::move(next);
      }
    }
    TORCH_CHECK_VALUE(static_cast<int64_t>(ids.size()) == counts[static_cast<size_t>(l)], "save_pretrained: layer ", l,
                      " has ", counts[static_cast<size_t>(l)], " heads, but the ", plans.size(), " plans given leave ",
                      ids.size(), ". Fix: pass every plan applied since the model was built (Pruner::history(), a "
                      "run's plan history)");
    std::vector<int64_t> removed;
    for (int64_t h = 0; h < c.num_attention_heads(); ++h) {
      if (std::find(ids.begin(), ids.end(), h) == ids.end()) removed.push_back(h);
    }
    if (!removed.empty()) out[l] = removed;
  }
  return out;
}

BertConfig pretrained_config(const BertForSequenceClassificationImpl& model, const std::vector<layers::PruningPlan>& plans) {
  BertConfig c = model.config;
  c.pruned_heads(pruned_heads_of(model, plans));
  c.vocab_size(model.embeddings->word_embeddings->weight.size(0));
  c.num_labels(model.classifier->weight.size(0));
  const auto widths = model.intermediate_sizes();
  const bool uniform = std::adjacent_find(widths.begin(), widths.end(), std::not_equal_to<>()) == widths.end();
  if (uniform && !widths.empty()) {
    c.intermediate_size(widths.front());
    c.intermediate_sizes({});
  } else {
    c.intermediate_sizes(widths);
  }
  c.validate();
  return c;
}

BertConfig save_pretrained(const BertForSequenceClassificationImpl& model, const std::string& dir,
                           const std::vector<layers::PruningPlan>& plans) {
  const BertConfig c = pretrained_config(model, plans);
  // The tensors of the model config.json describes, by name: forward extensions' state (fake
  // quantization, folding) is left out, and a shape the config would not rebuild is an error here,
  // not at load time. Building that model draws its init from the global generator: put it back.
  const auto state = io::state_dict(model);
  io::StateDict out;
  {
    const auto rebuilt = [&] {
      const nn::RandomStreamGuard keep;
      return BertForSequenceClassification(c);
    }();
    for (const auto& [name, expected] : io::state_dict(*rebuilt)) {
      const auto it = state.find(name);
      TORCH_CHECK(it != state.end() && it->second.sizes() == expected.sizes(), "save_pretrained: ", name, " is ",
                  it == state.end() ? std::string("missing") : c10::str(it->second.sizes()),
                  " but config.json rebuilds ", expected.sizes(), "; nothing was written");
      out[name] = it->second;
    }
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  TORCH_CHECK_VALUE(fs::is_directory(dir), "save_pretrained: cannot create the folder '", dir, "'. Fix: a writable path");
  // The weights first, config.json last: a failed write never leaves a new config beside old weights.
  const auto config_path = (fs::path(dir) / "config.json").string();
  fs::remove(config_path, ec);
  io::write_state_dict(out, (fs::path(dir) / "pytorch_model.bin").string());
  const std::string text = c.to_json() + "\n";
  io::write_file_atomic(config_path, std::vector<char>(text.begin(), text.end()), "config");
  return c;
}

BertForSequenceClassification load_pretrained(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string weights_path = (fs::path(dir) / "pytorch_model.bin").string();
  const auto bytes = io::read_file(config_path, "a BERT config (write one with save_pretrained)");
  BertConfig c;
  try {
    c = BertConfig::from_json(std::string(bytes.begin(), bytes.end()));
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, config_path, ": ", io::error_text(e));
  }
  BertForSequenceClassification model(c);
  const auto state = io::read_state_dict(weights_path);
  try {
    io::load_state_dict(*model, state, weights_path);
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, "load_pretrained: the weights do not fit the model ", config_path, " describes (",
                      "its pruned_heads and intermediate sizes decide the shapes): ", io::error_text(e),
                      "\nFix: keep config.json and pytorch_model.bin from the same save_pretrained");
  }
  return model;
}

}  // namespace libprune::models
