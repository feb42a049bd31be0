// Budget targets in recipes: their validation, and a run that cuts to a latency target with a table.
#include "helpers.h"
#include "libprune/libprune.h"
#include "libprune/measure/latency_table.h"
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>

using namespace libprune;

TEST_CASE("bad targets: an unknown kind, two kinds, out of range, with overrides, with a ratio in a recipe",
          "[budget]") {
  const auto problem = [](const prune::PrunerOptions& o) { return test::message_of([&] { o.validate(); }); };
  CHECK(problem(prune::PrunerOptions().target({{"speed", 0.5}})).find("budget kind \"speed\" does not exist; the kinds are latency, "
                                                                "latency_ms, macs, params") != std::string::npos);
  CHECK(problem(prune::PrunerOptions().target({{"latency", 0.5}, {"macs", 0.5}})).find("give one budget") != std::string::npos);
  CHECK(problem(prune::PrunerOptions().target({{"latency", 1.5}})).find("in (0, 1]") != std::string::npos);
  CHECK(problem(prune::PrunerOptions().target({{"latency_ms", -1}})).find("must be positive") != std::string::npos);
  CHECK(problem(prune::PrunerOptions().target({{"macs", 0.5}}).overrides({{"conv1", 0.2}})).find("give one") != std::string::npos);
  CHECK(problem(prune::PrunerOptions().target({{"macs", 0.5}})).empty());
  const std::string both = R"({"name": "x", "model": {"name": "cifar_resnet20"}, "data": {"kind": "synthetic"},
      "pruning": [{"ratio": 0.5, "target": {"latency": 0.4}}]})";
  const auto msg = test::message_of([&] { recipe::read_text(both, "both.json"); });
  CHECK(msg.find("pruning.0.target") != std::string::npos);
  CHECK(msg.find("a ratio or a target, not both") != std::string::npos);
  const auto kind = test::message_of([&] {
    recipe::read_text(R"({"name": "x", "model": {"name": "cifar_resnet20"}, "data": {"kind": "synthetic"},
        "pruning": [{"target": {"flops": 0.4}}]})", "kind.json");
  });
  CHECK(kind.find("\"flops\" does not exist") != std::string::npos);
}

TEST_CASE("a recipe with a latency target builds the table at latency_batch and cuts within it; its sensitivity scan "
          "is in the summary", "[budget]") {
  test::TempDir dir("latency_recipe");
  ::setenv("LIBPRUNE_CACHE_DIR", dir.file("cache").c_str(), 1);
  const std::string path = dir.file("tiny.json");
  std::ofstream(path) << R"({
    "name": "tiny", "model": {"name": "cifar_resnet20"},
    "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": 32, "limit_eval": 16},
    "training": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05}, "progress": false, "threads": 2},
    "pruning": [{"importance": "l2", "schedule": {"kind": "one_shot", "start_epoch": 1}, "target": {"latency": 0.95},
                 "latency_batch": 4, "ignored_layers": ["fc"]}],
    "report": {"latency_runs": 2, "latency_warmup": 1, "latency_batches": [4], "sensitivity_step": 0.4,
               "sensitivity_batches": 1, "goal": "latency_b4=0.99", "max_drop": 100},
    "output_dir": ")" + dir.file("out") + R"("})";
  // The table's entries are planted, in proportion to in x out and far below the whole model's
  // measured time: the run reuses each, and its check of the layers' sum against the whole model
  // cannot fire on a loaded CI (as it can for a model this small, timed for real).
  std::string planted;
  {
    auto model = models::create("cifar_resnet20", models::ModelOptions().in_channels(1).num_classes(10));
    auto x = torch::randn({4, 1, 8, 8});
    const auto trace = graph::Trace::capture(*model, [&] { return std::vector<torch::Tensor>{model->forward(x)}; });
    const auto timed = measure::LatencyTable::build(trace, 1000, measure::LatencyTableOptions().threads(2).cache_dir(dir.file("cache")));
    planted = test::plant_latency_cache(timed.cache_file(), [](const std::string&, int64_t in, int64_t out) {
      return 1e-9 * static_cast<double>(in * out);
    });
  }
  recipe::RunOptions quiet;
  quiet.print = false;
  // A target the model cannot reach fails when the run starts, not at its cut.
  quiet.sets = {"pruning.0.target={\"macs\": 0.0001}"};
  const auto unreachable = test::message_of([&] { recipe::run(path, quiet); });
  CHECK(unreachable.find("pruning.0.target: pruning target {\"macs\": 0.000") == 0);
  CHECK(unreachable.find("cannot be reached") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.file("out") + "/metrics.jsonl"));
  quiet.sets.clear();
  const auto result = recipe::run(path, quiet);
  ::unsetenv("LIBPRUNE_CACHE_DIR");
  REQUIRE(result.completed);
  CHECK(test::read_json(dir.file("cache") + "/latency-2t-channels_last.json").dump() == planted);  // read, nothing timed
  // and it is the only cache: the run looked for it where LIBPRUNE_CACHE_DIR says, under its thread count
  CHECK(std::distance(std::filesystem::directory_iterator(dir.file("cache")), std::filesystem::directory_iterator{}) == 1);
  const auto summary = nlohmann::json::parse(result.summary_json);
  CHECK(summary["pruned"]["macs"].get<double>() < summary["dense"]["macs"].get<double>());
  // The scan of the dense model before the cut: ResNet-20's free groups (the first convs of its 9
  // blocks and the 3 stage widths), at 40% and 80%.
  const auto& scan = summary["sensitivity"];
  REQUIRE(scan.is_object());
  CHECK(scan["ratios"] == nlohmann::json({0.4, 0.8}));
  REQUIRE(scan["rows"].size() == 12);
  for (const auto& row : scan["rows"]) {
    CHECK(row["kept"][1].get<int64_t>() < row["kept"][0].get<int64_t>());
    CHECK(row["kept"][0].get<int64_t>() < row["size"].get<int64_t>());
    CHECK(row["metric"].size() == 2);
  }
  // The goal judges the one candidate this run has; a chosen model is saved.
  const auto& goal = summary["goal"];
  REQUIRE(goal["candidates"].size() == 1);
  CHECK(goal["candidates"][0]["row"] == "pruned");
  CHECK(goal["candidates"][0].contains("latency_ratio"));
  const bool chosen = goal["chosen"] == "pruned";
  CHECK(std::filesystem::exists(dir.file("out") + "/chosen.pt") == chosen);
  if (goal["chosen"] == "pruned") CHECK(goal["file"] == "chosen.pt");
}

TEST_CASE("a recipe with allocation sensitivity divides its target by the scan; killed between cuts and resumed, it "
          "ends the same", "[budget]") {
  test::TempDir dir("allocation_recipe");
  const std::string path = dir.file("tiny.json");
  std::ofstream(path) << R"({
    "name": "tiny", "model": {"name": "cifar_resnet20"},
    "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": 32, "limit_eval": 16},
    "training": {"epochs": 5, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05}, "progress": false, "threads": 2},
    "pruning": [{"importance": "l2", "schedule": {"kind": "agp", "start_epoch": 1, "end_epoch": 3}, "target": {"macs": 0.5},
                 "allocation": "sensitivity", "ignored_layers": ["fc"]}],
    "report": {"latency_runs": 1, "latency_warmup": 0, "latency_batches": [4], "sensitivity_step": 0.4,
               "sensitivity_batches": 1},
    "output_dir": ")" + dir.file("a") + R"("})";
  recipe::RunOptions quiet;
  quiet.print = false;
  const auto no_scan = test::message_of([&] { recipe::read(path, {"report.sensitivity_step=0"}); });
  CHECK(no_scan.find("pruning.0.allocation") != std::string::npos);
  CHECK(no_scan.find("set report.sensitivity_step") != std::string::npos);
  const auto second_first = test::message_of([&] {
    recipe::read(path, {"pruning=[" + std::string(R"({"importance": "l2", "schedule": {"kind": "one_shot", "start_epoch": 2},
        "target": {"macs": 0.5}, "allocation": "sensitivity"}, {"schedule": {"kind": "one_shot", "start_epoch": 1}}])")});
  });
  CHECK(second_first.find("pruning.1 cuts first (epoch 1)") != std::string::npos);
  // An unreachable target fails when the run starts, before the scan exists.
  quiet.sets = {"pruning.0.target={\"macs\": 0.0001}"};
  const auto unreachable = test::message_of([&] { recipe::run(path, quiet); });
  CHECK(unreachable.find("pruning.0.target: pruning target {\"macs\": 0.000") == 0);
  CHECK_FALSE(std::filesystem::exists(dir.file("a") + "/metrics.jsonl"));
  quiet.sets.clear();
  const auto a = recipe::run(path, quiet);
  REQUIRE(a.completed);
  const auto plans = io::read_checkpoint_meta(dir.file("a/last.ckpt")).plans_json;
  CHECK(plans.find("allocated by sensitivity: predicted drop") != std::string::npos);
  quiet.sets = {"output_dir=" + dir.file("b")};
  quiet.stop_after_epochs = 3;  // after the first of the two cuts (epochs 2 and 3)
  CHECK_FALSE(recipe::run(path, quiet).completed);
  quiet.stop_after_epochs = 0;
  quiet.resume = true;
  const auto b = recipe::run(path, quiet);
  REQUIRE(b.completed);
  const auto sa = nlohmann::json::parse(a.summary_json), sb = nlohmann::json::parse(b.summary_json);
  CHECK(sb["pruned"]["params"] == sa["pruned"]["params"]);
  CHECK(sb["pruned"]["accuracy"] == sa["pruned"]["accuracy"]);
  CHECK(sa["pruned"]["macs"].get<double>() <= 0.5 * sa["dense"]["macs"].get<double>() * 1.001);
}
