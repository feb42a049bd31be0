#include "bert_helpers.h"
#include "helpers.h"
#include "libprune/io/checkpoint.h"
#include "libprune/libprune.h"
#include "libprune/recipe/runner.h"

#include <nlohmann/json.hpp>

#include <filesystem>

using namespace libprune;
using models::BertConfig;
using models::BertForSequenceClassification;
using prune::Pruner;
using prune::PrunerOptions;
using namespace bert_test;

TEST_CASE("bert: parameter names and shapes are Hugging Face's BertForSequenceClassification", "[bert]") {
  BertForSequenceClassification m(tiny_config());
  const auto params = m->named_parameters();
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"bert.embeddings.word_embeddings.weight", {50, 32}},
      {"bert.embeddings.position_embeddings.weight", {16, 32}},
      {"bert.embeddings.token_type_embeddings.weight", {2, 32}},
      {"bert.embeddings.LayerNorm.weight", {32}},
      {layer_name(1, "attention.self.query.weight"), {32, 32}},
      {layer_name(1, "attention.self.key.bias"), {32}},
      {layer_name(1, "attention.self.value.weight"), {32, 32}},
      {layer_name(1, "attention.output.dense.weight"), {32, 32}},
      {layer_name(1, "attention.output.LayerNorm.bias"), {32}},
      {layer_name(1, "intermediate.dense.weight"), {48, 32}},
      {layer_name(1, "output.dense.weight"), {32, 48}},
      {layer_name(1, "output.LayerNorm.weight"), {32}},
      {"bert.pooler.dense.weight", {32, 32}},
      {"classifier.weight", {3, 32}},
      {"classifier.bias", {3}}};
  for (const auto& [name, shape] : expected) {
    INFO(name);
    REQUIRE(params.contains(name));
    CHECK(params[name].sizes().vec() == shape);
  }
  // 5 embedding tensors, 16 per layer, pooler and classifier: nothing else.
  CHECK(params.size() == 5 + 2 * 16 + 4);
  // transformers' init: the padding token's embedding is zero, layer norms start at 1.
  CHECK(params["bert.embeddings.word_embeddings.weight"][0].abs().sum().item<double>() == 0.0);
  CHECK(params["bert.embeddings.LayerNorm.weight"].eq(1).all().item<bool>());
}

TEST_CASE("bert: padding masked out leaves the logits of the real tokens unchanged", "[bert]") {
  BertForSequenceClassification m(tiny_config());
  {
    torch::NoGradGuard no_grad;  // larger weights than transformers' init, so attention is far from uniform
    for (auto& p : m->parameters()) p.normal_(0, 0.3);
  }
  m->eval();
  auto in = text_batch(2, 8, 50, 3);
  const auto padded = m->forward_inputs(in);
  // Row 0 without its two padding tokens.
  const auto ids = in.at("input_ids").index({torch::indexing::Slice(0, 1), torch::indexing::Slice(0, 6)});
  const auto alone = m->forward_inputs({{"input_ids", ids}});
  CHECK(torch::allclose(padded[0], alone[0], 1e-5, 1e-5));
  // Without the mask the padding is attended and the logits move.
  const auto unmasked = m->forward_inputs({{"input_ids", in.at("input_ids")}});
  CHECK_FALSE(torch::allclose(padded[0], unmasked[0], 1e-4, 1e-4));
}

TEST_CASE("bert: pruning heads removes whole heads per layer, keeps the head size and the hidden size", "[bert]") {
  BertForSequenceClassification m(tiny_config());
  auto in = text_batch(2, 8, 50, 4);
  // Heads only: the feed-forward groups get ratio 0.
  Pruner pruner(m.ptr(), forward_of(m, in),
                PrunerOptions().ratio(0.5).ignored_layers({"classifier"}).overrides({{".*intermediate\\.dense", 0.0}}));
  pruner.step();
  for (const auto& why : pruner.verification_pins()) std::cerr << why << "\n";
  CHECK(pruner.verification_pins().empty());
  CHECK(m->heads_per_layer() == std::vector<int64_t>{2, 2});
  CHECK(m->intermediate_sizes() == std::vector<int64_t>{48, 48});
  const auto params = m->named_parameters();
  CHECK(params[layer_name(0, "attention.self.query.weight")].sizes().vec() == std::vector<int64_t>{16, 32});
  CHECK(params[layer_name(0, "attention.output.dense.weight")].sizes().vec() == std::vector<int64_t>{32, 16});
  CHECK(params["bert.embeddings.word_embeddings.weight"].size(1) == 32);
  CHECK(m->layers->ptr<models::BertLayerImpl>(0)->attention->self->attention_head_size == 8);
  CHECK(m->forward_inputs(in).sizes().vec() == std::vector<int64_t>{2, 3});
}

TEST_CASE("bert: feed-forward neurons are units; a global ratio keeps at least one head per layer", "[bert]") {
  BertForSequenceClassification m(tiny_config());
  auto in = text_batch(2, 8, 50, 5);
  Pruner pruner(m.ptr(), forward_of(m, in), PrunerOptions().ratio(0.9).global_pruning(true).ignored_layers({"classifier"}));
  const auto plan = pruner.step();
  CHECK(pruner.verification_pins().empty());
  for (int64_t h : m->heads_per_layer()) CHECK(h >= 1);
  for (int64_t n : m->intermediate_sizes()) CHECK((n >= 1 && n < 48));
  // The plan says where min_channels held the ratio back, and the note survives its JSON.
  REQUIRE_FALSE(plan.notes.empty());
  CHECK_THAT(plan.notes.front(), Catch::Contains("min_channels") && Catch::Contains("keeps 1"));
  CHECK(layers::PruningPlan::from_json(plan.to_json()).notes == plan.notes);
  // Locally too: a per-layer ratio of 0.9 leaves 1 of 4 heads, under min_channels 2.
  BertForSequenceClassification local(tiny_config());
  Pruner per_layer(local.ptr(), forward_of(local, in),
                   PrunerOptions().ratio(0.9).min_channels(2).ignored_layers({"classifier"}).overrides(
                       {{".*intermediate\\.dense", 0.0}}));
  const auto local_plan = per_layer.step();
  CHECK(local->heads_per_layer() == std::vector<int64_t>{2, 2});
  CHECK(local_plan.notes.size() == 2);  // one per layer's heads
  // Nothing held back: no notes.
  BertForSequenceClassification half(tiny_config());
  Pruner easy(half.ptr(), forward_of(half, in), PrunerOptions().ratio(0.5).ignored_layers({"classifier"}));
  CHECK(easy.step().notes.empty());
}

TEST_CASE("bert: with global ranking an override takes its groups out of the pool: heads only", "[bert]") {
  BertForSequenceClassification m(tiny_config());
  auto in = text_batch(2, 8, 50, 6);
  Pruner pruner(m.ptr(), forward_of(m, in),
                PrunerOptions().ratio(0.5).global_pruning(true).ignored_layers({"classifier"}).overrides(
                    {{".*intermediate\\.dense", 0.0}, {".*pooler\\.dense", 0.0}}));
  pruner.step();
  CHECK(m->intermediate_sizes() == std::vector<int64_t>{48, 48});
  CHECK(m->named_parameters()["bert.pooler.dense.weight"].size(0) == 32);
  // Half of the 8 heads, ranked across both layers, at least one kept in each.
  const auto heads = m->heads_per_layer();
  CHECK(heads[0] + heads[1] == 4);
  CHECK((heads[0] >= 1 && heads[1] >= 1));
}

TEST_CASE("bert: config.json round trip and bad configs", "[bert]") {
  const auto c = tiny_config().num_labels(26);
  const auto back = BertConfig::from_json(c.to_json());
  CHECK(back.to_json() == c.to_json());
  CHECK(back.num_labels() == 26);
  CHECK(BertConfig::from_json(R"({"id2label": {"0": "a", "1": "b", "2": "c"}})").num_labels() == 3);
  CHECK_THROWS_WITH(BertConfig::from_json(R"({"hidden_size": 30, "num_attention_heads": 4})"),
                    Catch::Contains("multiple of num_attention_heads"));
  CHECK_THROWS_WITH(BertConfig::from_json(R"({"vocab_size": "big"})"), Catch::Contains("\"vocab_size\" must be an integer"));
  CHECK_THROWS_WITH(BertConfig::from_json(R"({"hidden_act": "relu"})"), Catch::Contains("hidden_act"));
  CHECK_THROWS_WITH(BertConfig::from_json("[1"), Catch::Contains("not JSON"));
  CHECK_THROWS_WITH(models::bert_config("bert_huge"), Catch::Contains("bert_mini"));
}

TEST_CASE("bert: a sequence longer than the position table is an error naming the fix", "[bert]") {
  BertForSequenceClassification m(tiny_config());
  const auto ids = torch::ones({1, 17}, torch::kLong);
  CHECK_THROWS_WITH(m->forward(ids), Catch::Contains("max_position_embeddings 16") && Catch::Contains("truncate"));
  CHECK_THROWS_WITH(m->forward(torch::ones({1, 4})), Catch::Contains("integer token ids"));
}

TEST_CASE("bert: the zoo builds every size with the tokenizer's vocabulary", "[bert]") {
  const auto m = models::create("bert_mini", models::ModelOptions().num_classes(26).vocab_size(8000));
  auto* bert = dynamic_cast<models::BertForSequenceClassificationImpl*>(m.get());
  REQUIRE(bert != nullptr);
  CHECK(bert->config.vocab_size() == 8000);
  CHECK(bert->heads_per_layer() == std::vector<int64_t>{4, 4, 4, 4});
  CHECK(bert->classifier->weight.size(0) == 26);
}

TEST_CASE("bert: the WordNet heads recipe at 2,000 examples trains, cuts 30% of heads, keeps the FFN", "[bert]") {
  test::TempDir dir("bert_recipe");
  recipe::RunOptions o;
  o.print = false;
  o.sets = {"data.limit_train=2000", "data.limit_eval=500", "data.vocab_size=1000", "training.epochs=4",
            "training.lr_schedule.restarts=[3]", "training.progress=false", "pruning.0.schedule.start_epoch=3",
            "report.latency_batches=[1]", "report.latency_runs=1", "report.latency_tokens=32", "output_dir=" + dir.file("out")};
  const auto run = recipe::run(std::string(LIBPRUNE_SOURCE_DIR) + "/configs/bert_wordnet_heads30.json", o);
  REQUIRE(run.completed);
  const auto summary = nlohmann::json::parse(run.summary_json);
  INFO(run.summary_json.substr(0, 2000));
  CHECK(std::filesystem::exists(dir.file("out/tokenizer.model")));
  // 16 heads of 64 over 4 layers, 30% of them cut globally; the FFN and the hidden size stay.
  const auto& dense = summary.at("dense");
  const auto& pruned = summary.at("pruned");
  CHECK(pruned.at("params").get<int64_t>() < dense.at("params").get<int64_t>());
  const auto meta = io::read_checkpoint_meta(dir.file("out/last.ckpt"));
  CHECK(meta.plans_json.find("attention.self.query.weight") != std::string::npos);
  CHECK(meta.plans_json.find("intermediate.dense.weight") == std::string::npos);
  // The Hugging Face export: 4 original heads per layer, 30% of 16 (4 heads) named in pruned_heads.
  const auto exported = models::load_pretrained(dir.file("out/hf"));
  CHECK(exported->config.num_attention_heads() == 4);
  int64_t removed = 0;
  for (const auto& [layer, heads] : exported->config.pruned_heads()) removed += static_cast<int64_t>(heads.size());
  CHECK(removed == 4);
  int64_t exported_params = 0;
  for (const auto& p : exported->parameters()) exported_params += p.numel();
  CHECK(exported_params == pruned.at("params").get<int64_t>());
  // Above the majority class (14.1%): the labels and the texts line up (250 steps from scratch).
  CHECK(pruned.at("accuracy").get<double>() > 20.0);
  // The recipe's PTQ rows: its linears in int8 (the weights a quarter of fp32), the rest float.
  for (const char* key : {"int8", "pruned_int8"}) {
    INFO(key);
    REQUIRE(summary.contains(key));
    CHECK(summary.at(key).at("argmax_agreement_with_float").get<double>() > 90.0);
  }
  CHECK(summary.at("pruned_int8").at("size_bytes").get<double>() < 0.5 * pruned.at("size_bytes").get<double>());
}

TEST_CASE("bert: weights trained with another tokenizer are refused, naming both vocabularies", "[bert]") {
  test::TempDir dir("bert_vocab");
  auto other = models::create("bert_mini", models::ModelOptions().num_classes(26).vocab_size(999));
  io::save_state_dict(*other, dir.file("other.pt"));
  recipe::RunOptions o;
  o.print = false;
  o.sets = {"data.limit_train=2000", "data.limit_eval=100", "data.vocab_size=1000", "training.epochs=1",
            "training.lr_schedule.restarts=[]", "pruning=[]", "model.weights=" + dir.file("other.pt"), "output_dir=" + dir.file("out")};
  CHECK_THROWS_WITH(recipe::run(std::string(LIBPRUNE_SOURCE_DIR) + "/configs/bert_wordnet_heads30.json", o),
                    Catch::Contains("vocabulary of 999 tokens") && Catch::Contains("tokenizer.model has 1000") &&
                        Catch::Contains("data.tokenizer"));
}
