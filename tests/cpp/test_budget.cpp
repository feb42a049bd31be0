// Budgeted pruning: operator sites, latency tables and their cache, MACs and latency targets (recipes: test_budget_recipe.cpp).
#include "helpers.h"
#include "libprune/libprune.h"
#include "libprune/measure/latency_table.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>

using namespace libprune;
using measure::LatencyTable;
using measure::LatencyTableOptions;
using prune::Pruner;
using prune::PrunerOptions;

namespace {

// conv1 (1 -> 32) -> bn -> relu -> conv2 (32 -> 32) -> bn -> relu -> mean -> fc (32 -> 10).
struct TwoConvImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(1, 32, 3).padding(1).bias(false)};
  torch::nn::BatchNorm2d bn1{32};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(32, 32, 3).padding(1).bias(false)};
  torch::nn::BatchNorm2d bn2{32};
  torch::nn::Linear fc{32, 10};
  TwoConvImpl() {
    register_module("conv1", conv1);
    register_module("bn1", bn1);
    register_module("conv2", conv2);
    register_module("bn2", bn2);
    register_module("fc", fc);
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn2(conv2(torch::relu(bn1(conv1(x))))));
    return fc(x.mean({2, 3}));
  }
};
TORCH_MODULE(TwoConv);

graph::Forward two_conv_forward(TwoConv m, torch::Tensor x) {
  return [m, x]() mutable { return std::vector<torch::Tensor>{m->forward(x)}; };
}

double site_macs(TwoConv m, const torch::Tensor& x) {
  double macs = 0;
  for (const auto& s : measure::op_sites(graph::Trace::capture(*m, two_conv_forward(m, x))))
    macs += s.macs(s.in_channels(), s.out_channels());
  return macs;
}

LatencyTableOptions quick_table(const test::TempDir& dir) { return LatencyTableOptions().cache_dir(dir.path.string()).runs(3).warmup(1); }

// m's table at x with the whole model's time given, not measured. The default is roomy: a table
// whose layers add up to more than the whole model is timed again (tested on its own below), and a
// 0.1 ms model's layers, timed alone under a loaded CI, can; the counts checked here must not move.
LatencyTable table_of(TwoConv m, const torch::Tensor& x, const LatencyTableOptions& options, double dense_ms = 1000) {
  return LatencyTable::build(graph::Trace::capture(*m, two_conv_forward(m, x)), dense_ms, options);
}

// Times m's table once, then rewrites its cache as a made-up machine: each conv entry costs
// conv_ms(in, out), everything else 0.01 ms. A build from `dir` then reads these.
void plant_costs(TwoConv m, const torch::Tensor& x, const test::TempDir& dir,
                 const std::function<double(int64_t, int64_t)>& conv_ms) {
  test::plant_latency_cache(table_of(m, x, quick_table(dir)).cache_file(), [&](const std::string& key, int64_t in, int64_t out) {
    return key.rfind("conv", 0) != 0 ? 0.01 : conv_ms(in, out);
  });
}

}  // namespace

TEST_CASE("op sites: every conv and linear layer with its shapes; their MACs at full width are count_ops'", "[budget]") {
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10).in_channels(1));
  auto x = torch::randn({2, 1, 16, 16});
  const auto trace = graph::Trace::capture(*m, [&] { return std::vector<torch::Tensor>{m->forward(x)}; });
  const auto sites = measure::op_sites(trace);
  const auto count = measure::count_ops(trace);
  const auto layers = std::count_if(sites.begin(), sites.end(), [](const measure::OpSite& s) { return s.layer(); });
  REQUIRE(layers == static_cast<int64_t>(count.layers.size()));
  // 19 ReLUs and 9 residual adds follow them, each named after the layer whose channels it carries.
  CHECK(sites.size() - static_cast<size_t>(layers) == 28);
  CHECK(std::any_of(sites.begin(), sites.end(), [](const auto& s) { return s.name == "layer1.0.conv2.weight:add.0"; }));
  double macs = 0;
  for (const auto& s : sites) macs += s.macs(s.in_channels(), s.out_channels());
  CHECK(macs == Approx(static_cast<double>(count.macs)));
  CHECK(sites.front().weight == "conv1.weight");
  const auto& fc = sites[static_cast<size_t>(layers) - 1];
  CHECK(fc.kind == "linear");
  CHECK(fc.in_channels() == 64);
  CHECK(fc.shape_key() == "linear in[2,64] 64->10");
  CHECK(sites.back().shape_key() == "relu in[2,64,4,4] 64->64");
  torch::nn::Conv2d dw(torch::nn::Conv2dOptions(8, 8, 3).groups(8).padding(1));
  auto y = torch::randn({1, 8, 5, 5});
  const auto dws = measure::op_sites(graph::Trace::capture(*dw, [&] { return std::vector<torch::Tensor>{dw->forward(y)}; }));
  REQUIRE(dws.size() == 1);
  CHECK(dws[0].depthwise());
  CHECK(dws[0].macs(8, 4) == 4 * 25 * 9);
}

TEST_CASE("latency table: measured once, reused from the cache; a foreign or broken cache is measured again",
          "[budget]") {
  torch::manual_seed(0);
  test::TempDir dir("latency_cache");
  TwoConv m;
  auto x = torch::randn({4, 1, 12, 12});
  const auto a = table_of(m, x, quick_table(dir));
  CHECK(a.sites().size() == 5);  // 3 layers, 2 ReLUs
  // conv1 1 x {8..32}, conv2 4 x 4, fc {8..32} x {4, 8, 10}, the first ReLU {8..32}; the second has its shape
  CHECK(a.entries_measured() == 4 + 16 + 4 * 3 + 4);
  CHECK(a.entries_reused() == 4);
  REQUIRE(std::filesystem::exists(a.cache_file()));
  CHECK(LatencyTable::sample_widths(10) == std::vector<int64_t>{4, 8, 10});
  CHECK(LatencyTable::sample_widths(2048).size() == 16);
  // The latency model gives the dense model's measured time back, and interpolates between samples.
  const auto trace = graph::Trace::capture(*m, two_conv_forward(m, x));
  CHECK(a.predict_ms(trace) == Approx(a.dense_ms()).epsilon(1e-9));
  CHECK(a.op_ms(1, 32, 20) == Approx((a.op_ms(1, 32, 16) + a.op_ms(1, 32, 24)) / 2));
  const auto b = table_of(m, x, quick_table(dir));
  CHECK(b.entries_measured() == 0);
  CHECK(b.entries_reused() == a.entries_measured() + 4);
  CHECK(b.op_ms(1, 16, 24) == a.op_ms(1, 16, 24));
  // A file from another CPU is not used: measured again and replaced.
  auto cached = test::read_json(a.cache_file());
  cached["machine"]["cpu"] = "another CPU";
  std::ofstream(a.cache_file()) << cached.dump();
  const auto c = table_of(m, x, quick_table(dir));
  CHECK(c.entries_measured() == a.entries_measured());
  CHECK(test::read_json(a.cache_file())["machine"]["cpu"] == a.machine().cpu);
  // Other threads are another file, keyed by the count. (Its entries are planted, not timed: more
  // threads than free cores, as under a parallel ctest, time each conv at a scheduler slice.)
  const int other_threads = a.machine().threads == 1 ? 2 : 1;
  auto planted = test::read_json(a.cache_file());
  planted["machine"]["threads"] = other_threads;
  for (auto& [key, grid] : planted["ops"].items()) {
    for (auto& ms : grid["ms"]) ms = ms.get<double>() / 100;
  }
  const auto other_file = dir.path / ("latency-" + std::to_string(other_threads) + "t-channels_last.json");
  std::ofstream(other_file) << planted.dump();
  const auto other = table_of(m, x, quick_table(dir).threads(other_threads));
  CHECK(other.cache_file() == other_file.string());
  CHECK(other.entries_measured() == 0);
  CHECK(other.machine().threads == other_threads);
  std::ofstream(a.cache_file()) << "{";
  CHECK(table_of(m, x, quick_table(dir)).entries_measured() == a.entries_measured());
  // Entries timed on a busy machine (here 100 ms each) add up to far more than the whole model
  // (given as 100 ms: far above what these layers really take): every site is timed again, and the
  // cache is mended.
  test::plant_latency_cache(a.cache_file(), [](const std::string&, int64_t, int64_t) { return 100.0; });
  const auto busy = table_of(m, x, quick_table(dir), 100);
  CHECK(busy.entries_measured() == a.entries_measured());  // each shape once: the second ReLU shares the first's
  CHECK(busy.entries_reused() == 4);
  CHECK(table_of(m, x, quick_table(dir), 100).entries_measured() == 0);
  // Built from the module, the whole model is timed as deployed (eval, batch norms folded), and the
  // model is left in the mode it was in.
  m->train();
  const double deployed = measure::deployed_ms(*m, [&](const nn::Inputs& in) { return m->forward(in.single()); },
                                               nn::Inputs{{"images", x}}, quick_table(dir));
  CHECK(deployed > 0);
  CHECK(deployed < 1000);
  CHECK(m->is_training());
}

TEST_CASE("a MACs target: the cut meets the budget, steps toward it, and takes the unimportant channels",
          "[budget]") {
  torch::manual_seed(0);
  TwoConv m;
  {
    torch::NoGradGuard no_grad;
    m->conv1->weight.slice(0, 0, 8).mul_(1e-3);  // conv1's first 8 filters barely matter
  }
  auto x = torch::randn({2, 1, 12, 12});
  const double dense = site_macs(m, x);
  Pruner pruner(m.ptr(), two_conv_forward(m, x), PrunerOptions().target({{"macs", 0.6}}).ignored_layers({"fc"}));
  pruner.set_progress(0.5);  // a schedule's first step: 0.8 of dense
  auto plan = pruner.step();
  CHECK(site_macs(m, x) <= 0.8 * dense);
  CHECK(site_macs(m, x) > 0.7 * dense);
  // A conv1 filter saves what a conv2 filter does (its input to conv2 goes with it): 7 of the 8 weak
  // filters reach 0.8, and nothing else is cut.
  CHECK(m->conv1->weight.size(0) == 25);
  CHECK(m->conv2->weight.size(0) == 32);
  REQUIRE_FALSE(plan.notes.empty());
  CHECK(plan.notes.front().find("budget macs 0.600 (this step: 0.800 of dense)") == 0);
  pruner.set_progress(1);
  pruner.step();
  CHECK(site_macs(m, x) <= 0.6 * dense);
  CHECK(site_macs(m, x) > 0.5 * dense);
  CHECK(m->conv1->weight.flatten(1).norm(2, 1).min().item<double>() > 1e-2);  // every weak filter is gone
}

TEST_CASE("importance kept: one measure for ratio and budget plans; at a uniform cut's MACs the budget keeps more",
          "[budget]") {
  torch::manual_seed(0);
  const auto weak_model = [] {
    torch::manual_seed(0);
    TwoConv m;
    torch::NoGradGuard no_grad;
    m->conv1->weight.slice(0, 0, 12).mul_(1e-2);  // conv1's first 12 filters barely matter
    return m;
  };
  auto x = torch::randn({2, 1, 12, 12});
  auto uniform_model = weak_model();
  const double dense = site_macs(uniform_model, x);
  const auto uniform = Pruner(uniform_model.ptr(), two_conv_forward(uniform_model, x),
                              PrunerOptions().ratio(0.5).ignored_layers({"fc"})).step();
  // Each group's top half by score: more than half its importance, less than all.
  CHECK(uniform.importance_kept > 0.5);
  CHECK(uniform.importance_kept < 1.0);
  const double uniform_macs = site_macs(uniform_model, x);
  auto budget_model = weak_model();
  const auto budget = Pruner(budget_model.ptr(), two_conv_forward(budget_model, x),
                             PrunerOptions().target({{"macs", uniform_macs / dense}}).ignored_layers({"fc"})).step();
  CHECK(site_macs(budget_model, x) <= uniform_macs * (1 + 1e-9));
  CHECK(budget.importance_kept > uniform.importance_kept);
  REQUIRE_FALSE(budget.notes.empty());
  CHECK(budget.notes.front().find("importance kept") != std::string::npos);
  // Nothing cut: all of it kept, never more (rounding), so the plan's JSON loads back.
  for (int seed = 0; seed < 8; ++seed) {
    torch::manual_seed(seed);
    TwoConv untouched;
    const auto plan = Pruner(untouched.ptr(), two_conv_forward(untouched, x), PrunerOptions().ratio(0.01).ignored_layers({"fc"})).step();
    CHECK(plan.importance_kept == Approx(1.0));
    CHECK(plan.importance_kept <= 1.0);
    CHECK_NOTHROW(layers::PruningPlan::from_json(plan.to_json()));
  }
  CHECK(layers::PruningPlan::from_json(uniform.to_json()).importance_kept == Approx(uniform.importance_kept));
  auto json = nlohmann::json::parse(uniform.to_json());
  json["importance_kept"] = 1.5;
  CHECK_THROWS_WITH(layers::PruningPlan::from_json(json.dump()), Catch::Contains("importance_kept must be a number in [0, 1]"));
}

TEST_CASE("a latency target follows the table: widths that cost the same are kept; an unreachable one changes nothing",
          "[budget]") {
  torch::manual_seed(0);
  test::TempDir dir("latency_target");
  TwoConv m;
  auto x = torch::randn({4, 1, 12, 12});
  // A staircase machine: a conv costs by started blocks of 16 channels, so 24 costs what 32 does,
  // and 8 output channels cost more than 16 (as 8-channel convs run slower on AVX-512 CPUs).
  plant_costs(m, x, dir, [](int64_t in, int64_t out) {
    return std::ceil(in / 16.0) * std::ceil(out / 16.0) + (out <= 8 ? 0.5 : 0);
  });
  const auto trace = graph::Trace::capture(*m, two_conv_forward(m, x));
  auto table = std::make_shared<LatencyTable>(LatencyTable::build(trace, 6.04, quick_table(dir)));
  REQUIRE(table->entries_measured() == 0);
  CHECK(table->rest_ms() == Approx(0.01));  // activations: cutting them saves almost nothing
  Pruner pruner(m.ptr(), two_conv_forward(m, x), PrunerOptions().target({{"latency", 0.5}}).ignored_layers({"fc"}));
  const auto before = test::snapshot(*m);
  CHECK(test::message_of([&] { pruner.step(); }).find("needs a latency table") != std::string::npos);
  CHECK(test::same(before, test::snapshot(*m)));
  pruner.set_latency_table(table);
  const auto plan = pruner.step();
  CHECK(m->conv1->weight.size(0) % 16 == 0);
  CHECK(m->conv2->weight.size(0) % 16 == 0);
  CHECK(table->predict_ms(graph::Trace::capture(*m, two_conv_forward(m, x))) <= 3.02 + 1e-9);
  REQUIRE_FALSE(plan.notes.empty());
  CHECK(plan.notes.front().find("predicted") != std::string::npos);
  // A later step measures the model it starts from: here it runs 1.5x slower than the table says,
  // so the cut aims lower; no narrower width saves anything, so it keeps the budget as asked, and says so.
  pruner.set_latency_probe([&] { return 1.5 * table->predict_ms(graph::Trace::capture(*m, two_conv_forward(m, x))); });
  const auto calibrated = pruner.plan();
  REQUIRE_FALSE(calibrated.notes.empty());
  CHECK(calibrated.notes.front().find("calibrated on the model as it was") != std::string::npos);
  CHECK(calibrated.notes.front().find("): cut to the uncalibrated budget") != std::string::npos);
  CHECK(calibrated.empty());
  const auto after = test::snapshot(*m);
  Pruner tight(m.ptr(), two_conv_forward(m, x), PrunerOptions().target({{"latency", 0.05}}).ignored_layers({"fc"}));
  tight.set_latency_table(table);
  const auto msg = test::message_of([&] { tight.step(); });
  CHECK(msg.find("cannot be reached: the smallest this model reaches is") != std::string::npos);
  CHECK(msg.find("Nothing was changed") != std::string::npos);
  CHECK(test::same(after, test::snapshot(*m)));
}

TEST_CASE("a latency target keeps round_to: every width it chooses is a multiple", "[budget]") {
  torch::manual_seed(0);
  test::TempDir dir("latency_round");
  auto x = torch::randn({4, 1, 12, 12});
  // A machine where a conv costs in x out: any width saves, so the best cut is off the 16s.
  plant_costs(TwoConv(), x, dir, [](int64_t in, int64_t out) { return static_cast<double>(in * out) / 1024; });
  const auto widths = [&](int64_t round_to) {
    torch::manual_seed(0);
    TwoConv m;
    auto table = std::make_shared<LatencyTable>(
        LatencyTable::build(graph::Trace::capture(*m, two_conv_forward(m, x)), 1.1, quick_table(dir)));
    Pruner pruner(m.ptr(), two_conv_forward(m, x),
                  PrunerOptions().target({{"latency", 0.5}}).ignored_layers({"fc"}).round_to(round_to));
    pruner.set_latency_table(table);
    pruner.step();
    CHECK(table->predict_ms(graph::Trace::capture(*m, two_conv_forward(m, x))) <= 0.55 + 1e-9);
    return std::make_pair(m->conv1->weight.size(0), m->conv2->weight.size(0));
  };
  const auto free = widths(1);
  CHECK((free.first % 16 != 0 || free.second % 16 != 0));
  const auto aligned = widths(16);
  CHECK(aligned.first % 16 == 0);
  CHECK(aligned.second % 16 == 0);
}
