#include "bert_helpers.h"
#include "helpers.h"
#include "libprune/io/file.h"
#include "libprune/io/state_dict.h"
#include "libprune/libprune.h"

#include <nlohmann/json.hpp>

#include <fstream>

using namespace libprune;
using namespace bert_test;
using prune::Pruner;
using prune::PrunerOptions;

namespace {

// Weights far from the tiny init, so heads differ clearly in importance.
BertForSequenceClassification spread_model(int64_t seed) {
  torch::manual_seed(seed);
  BertForSequenceClassification m(tiny_config());
  torch::NoGradGuard no_grad;
  for (auto& p : m->parameters()) p.normal_(0, 0.3);
  m->eval();
  return m;
}

// Heads only: the feed-forward and pooler groups get ratio 0.
const std::vector<std::pair<std::string, double>> heads_only = {{".*intermediate\\.dense", 0.0}, {".*pooler\\.dense", 0.0}};

nlohmann::json read_json(const std::string& path) {
  const auto bytes = io::read_file(path, "json");
  return nlohmann::json::parse(std::string(bytes.begin(), bytes.end()));
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

torch::Tensor logits(BertForSequenceClassification& m, const nn::Inputs& in) {
  torch::NoGradGuard no_grad;
  return m->forward_inputs(in);
}

}  // namespace

TEST_CASE("bert export: pruned_heads names the original heads over two cuts; the masked dense model agrees", "[bert]") {
  auto m = spread_model(11);
  BertForSequenceClassification dense(tiny_config());
  io::load_state_dict(*dense, io::state_dict(*m));
  dense->eval();
  const auto in = text_batch(3, 8, 50, 7);
  Pruner pruner(m.ptr(), forward_of(m, in),
                PrunerOptions().ratio(0.25).ignored_layers({"classifier"}).overrides(heads_only));
  pruner.step();
  pruner.set_ratio(0.5);
  pruner.step();  // 4 heads -> 3 -> 2, so the second plan's indices are not the original ones
  REQUIRE(m->heads_per_layer() == std::vector<int64_t>{2, 2});

  test::TempDir dir("bert_export");
  const auto written = models::save_pretrained(*m, dir.path.string(), pruner.history());
  CHECK(written.num_attention_heads() == 4);
  REQUIRE(written.pruned_heads().size() == 2);
  // Removing those heads is zeroing their columns of the attention output in the dense model.
  {
    torch::NoGradGuard no_grad;
    for (const auto& [layer, heads] : written.pruned_heads()) {
      CHECK(heads.size() == 2);
      auto w = dense->named_parameters()[layer_name(layer, "attention.output.dense.weight")];
      for (const auto h : heads) w.narrow(1, h * 8, 8).zero_();
    }
  }
  CHECK(torch::allclose(logits(dense, in), logits(m, in), 1e-5, 1e-5));

  const auto j = read_json(dir.file("config.json"));
  CHECK(j["num_attention_heads"] == 4);
  CHECK(j["intermediate_size"] == 48);  // uniform: transformers' own key
  CHECK_FALSE(j.contains("libprune_intermediate_sizes"));
  CHECK(j["pruned_heads"]["0"].size() == 2);
  auto again = models::load_pretrained(dir.path.string());
  again->eval();
  CHECK(again->heads_per_layer() == m->heads_per_layer());
  CHECK(torch::allclose(logits(again, in), logits(m, in), 1e-6, 1e-6));
}

TEST_CASE("bert export: a feed-forward width per layer goes in libprune's key; pruned_heads carry over", "[bert]") {
  torch::manual_seed(3);
  BertForSequenceClassification m(tiny_config().intermediate_sizes({40, 24}).pruned_heads({{1, {0}}}));
  m->eval();
  CHECK(m->heads_per_layer() == std::vector<int64_t>{4, 3});
  CHECK(m->intermediate_sizes() == std::vector<int64_t>{40, 24});
  test::TempDir dir("bert_export_ffn");
  models::save_pretrained(*m, dir.path.string());
  const auto j = read_json(dir.file("config.json"));
  CHECK(j["intermediate_size"] == 48);
  CHECK(j["libprune_intermediate_sizes"] == std::vector<int64_t>{40, 24});
  CHECK(j["pruned_heads"]["1"] == std::vector<int64_t>{0});
  const auto in = text_batch(2, 6, 50, 1);
  auto again = models::load_pretrained(dir.path.string());
  again->eval();
  CHECK(torch::allclose(logits(again, in), logits(m, in), 1e-6, 1e-6));
}

TEST_CASE("bert export: bad input names the fix and writes or loads nothing half-way", "[bert]") {
  auto m = spread_model(5);
  const auto in = text_batch(2, 6, 50, 2);
  Pruner pruner(m.ptr(), forward_of(m, in),
                PrunerOptions().ratio(0.5).ignored_layers({"classifier"}).overrides(heads_only));
  pruner.step();
  test::TempDir dir("bert_export_bad");
  // Without the plans the original head indices are unknown.
  CHECK_THROWS_WITH(models::save_pretrained(*m, dir.file("first")), Catch::Contains("pass every plan"));
  CHECK_FALSE(std::filesystem::exists(dir.file("first")));  // not even the folder
  models::save_pretrained(*m, dir.path.string(), pruner.history());
  // A config that disagrees with the weights: one head fewer removed in layer 0.
  auto j = read_json(dir.file("config.json"));
  j["pruned_heads"]["0"] = {j["pruned_heads"]["0"][0]};
  write_text(dir.file("config.json"), j.dump());
  CHECK_THROWS_WITH(models::load_pretrained(dir.path.string()),
                    Catch::Contains("do not fit") && Catch::Contains("pruned_heads") &&
                        Catch::Contains("attention.self.query.weight"));
  CHECK_THROWS_WITH(models::load_pretrained(dir.file("missing")), Catch::Contains("config.json"));
  // A cut pooler has no Hugging Face form.
  auto pooled = spread_model(6);
  Pruner everything(pooled.ptr(), forward_of(pooled, in), PrunerOptions().ratio(0.5).ignored_layers({"classifier"}));
  everything.step();
  CHECK_THROWS_WITH(models::save_pretrained(*pooled, dir.file("pooled"), everything.history()),
                    Catch::Contains("pooler was cut"));
  auto config = [](const std::string& heads) {
    return models::BertConfig::from_json(R"({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32,
                                             "pruned_heads": )" + heads + "}");
  };
  CHECK(config(R"({"1": [2, 0]})").heads_of(1) == 2);
  CHECK_THROWS_WITH(config(R"({"0": [0, 1, 2, 3]})"), Catch::Contains("every head of layer 0"));
  CHECK_THROWS_WITH(config(R"({"0": [7]})"), Catch::Contains("names head 7"));
  CHECK_THROWS_WITH(config(R"({"2": [0]})"), Catch::Contains("names layer 2"));
  CHECK_THROWS_WITH(config(R"({"x": [0]})"), Catch::Contains("not a layer index"));
  CHECK_THROWS_WITH(config(R"([0])"), Catch::Contains("must map layer indices"));
}

TEST_CASE("remove_units: transformers' prune_heads in place for any model, AdamW's moments cut with the weights", "[bert]") {
  auto m = spread_model(2);
  m->train();
  const auto in = text_batch(2, 6, 50, 3);
  torch::optim::AdamW opt(m->parameters(), torch::optim::AdamWOptions(1e-3));
  m->forward_inputs(in).pow(2).sum().backward();
  opt.step();
  auto params = m->named_parameters();
  auto query = params[layer_name(0, "attention.self.query.weight")];
  auto moment = [&] {
    auto& state = opt.state().at(c10::guts::to_string(query.unsafeGetTensorImpl()));
    return static_cast<torch::optim::AdamWParamState&>(*state).exp_avg();
  };
  const auto before = moment().clone();
  const auto weight_before = query.detach().clone();
  const auto out_before = params[layer_name(0, "attention.output.dense.weight")].detach().clone();
  m->eval();
  Pruner pruner(m.ptr(), forward_of(m, in));
  const auto plan = pruner.remove_units({{layer_name(0, "attention.self.query"), {1, 3}}}, &opt);
  CHECK(m->heads_per_layer() == std::vector<int64_t>{2, 4});
  CHECK(m->intermediate_sizes() == std::vector<int64_t>{48, 48});
  const auto kept = torch::cat({torch::arange(0, 8), torch::arange(16, 24)});
  CHECK(torch::equal(query, weight_before.index_select(0, kept)));
  CHECK(torch::equal(params[layer_name(0, "attention.output.dense.weight")], out_before.index_select(1, kept)));
  CHECK(torch::equal(moment(), before.index_select(0, kept)));
  m->train();
  m->forward_inputs(in).sum().backward();
  opt.step();  // the optimizer goes on with the cut state
  test::TempDir dir("bert_remove_units");
  CHECK(models::save_pretrained(*m, dir.path.string(), pruner.history()).pruned_heads() == models::HeadMap{{0, {1, 3}}});
  // Feed-forward neurons the same way; bad input changes nothing.
  pruner.remove_units({{layer_name(1, "intermediate.dense"), {0, 47}}});
  CHECK(m->intermediate_sizes() == std::vector<int64_t>{48, 46});
  // Ratios of later steps count against the sizes before remove_units: layer 0 lost 2 of its 4
  // heads, so a ratio of one half leaves it as it is and takes layer 1 from 4 to 2.
  auto fresh = spread_model(4);
  Pruner half(fresh.ptr(), forward_of(fresh, in), PrunerOptions().ratio(0.5).ignored_layers({"classifier"}).overrides(heads_only));
  half.remove_units({{layer_name(0, "attention.self.query"), {0, 1}}});
  half.step();
  CHECK(fresh->heads_per_layer() == std::vector<int64_t>{2, 2});
  const auto shapes = [&] {
    std::vector<std::vector<int64_t>> out;
    for (const auto& p : m->parameters()) out.push_back(p.sizes().vec());
    return out;
  };
  const auto kept_shapes = shapes();
  using Units = std::map<std::string, std::vector<int64_t>>;
  CHECK_THROWS_WITH(pruner.remove_units(Units{{layer_name(0, "attention.self.query"), {0, 1}}}),
                    Catch::Contains("empties it"));
  CHECK_THROWS_WITH(pruner.remove_units(Units{{layer_name(1, "attention.self.query"), {4}}}),
                    Catch::Contains("unit 4 does not exist"));
  CHECK_THROWS_WITH(pruner.remove_units(Units{{"bert.encoder.layer.9.attention.self.query", {0}}}),
                    Catch::Contains("no group cuts the outputs of 'bert.encoder.layer.9"));
  CHECK_THROWS_WITH(pruner.remove_units(Units{{layer_name(1, "attention.self.query"), {0}},
                                              {layer_name(1, "attention.self.key"), {1}}}),
                    Catch::Contains("are cut together"));
  CHECK_THROWS_WITH(pruner.remove_units(Units{{layer_name(0, "attention.output.dense"), {0}}}),
                    Catch::Contains("cannot be cut"));
  CHECK(shapes() == kept_shapes);
}
