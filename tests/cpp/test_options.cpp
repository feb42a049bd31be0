// Options defined once (one vocabulary for recipes, C++ and Python), choices checked when a recipe
// loads, user criteria and op rules.
#include "helpers.h"
#include "libprune/graph/op_rules.h"
#include "libprune/libprune.h"
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"
#include "test_paths.h"

#include <fstream>
#include <sstream>

using namespace libprune;

namespace {

std::string recipe_error(const std::string& text) {
  return test::message_of([&] { recipe::load_text(text, "configs/x.json"); });
}

graph::Forward forward_of(const models::ModelPtr& m, const torch::Tensor& x) {
  return [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; };
}

models::ModelPtr small_resnet() {
  torch::manual_seed(0);
  return models::create("cifar_resnet20", models::ModelOptions().num_classes(10).in_channels(1));
}

// Output widths of the convs, in parameter order.
std::vector<int64_t> widths(const models::ModelPtr& m) {
  std::vector<int64_t> out;
  for (const auto& p : m->named_parameters()) {
    if (p.value().dim() == 4) out.push_back(p.value().size(0));
  }
  return out;
}

}  // namespace

TEST_CASE("recipes: a renamed key says its new name", "[options]") {
  CHECK_THAT(recipe_error(R"({"pruning": [{"target_ratio": 0.5}]})"),
             Catch::Contains("configs/x.json at pruning.0.target_ratio: \"target_ratio\" was renamed to \"ratio\"") &&
                 Catch::Contains("Fix: write \"ratio\""));
  CHECK_THAT(recipe_error(R"({"pruning": [{"criterion": "l2"}]})"), Catch::Contains("renamed to \"importance\""));
  CHECK_THAT(recipe_error(R"({"pruning": [{"scope": "global"}]})"), Catch::Contains("renamed to \"global_pruning\""));
  CHECK_THAT(recipe_error(R"({"pruning": [{"ignored": ["fc"]}]})"), Catch::Contains("renamed to \"ignored_layers\""));
  CHECK_THAT(recipe_error(R"({"pruning": [{"schedule": {"initial": 0.1}}]})"),
             Catch::Contains("at pruning.0.schedule.initial") && Catch::Contains("renamed to \"initial_ratio\""));
}

TEST_CASE("recipes: every unknown choice names the file, the JSON path and the allowed values", "[options]") {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases{
      {R"({"pruning": [{"importance": "l3"}]})", "at pruning.0.importance", "l1, l2, bn_scale, taylor, fpgm, lamp, random"},
      {R"({"pruning": [{"reduction": "median"}]})", "at pruning.0.reduction", "sum, mean, max, first"},
      {R"({"pruning": [{"schedule": {"kind": "cubic"}}]})", "at pruning.0.schedule.kind", "one_shot, iterative, agp"},
      {R"({"training": {"optimizer": {"name": "lion"}}})", "at training.optimizer.name", "sgd, adamw"},
      {R"({"training": {"lr_schedule": {"name": "poly"}}})", "at training.lr_schedule.name", "constant, step, cosine, one_cycle"},
      {R"({"data": {"kind": "imagenet"}})", "at data.kind", "fashion_mnist, mnist, cifar10, cifar100, image_folder, synthetic"},
      {R"({"model": {"name": "resnet51"}})", "at model.name", "resnet50"}};
  for (const auto& [text, path, allowed] : cases) {
    INFO(text);
    CHECK_THAT(recipe_error(text), Catch::Contains("configs/x.json " + path + ": unknown") && Catch::Contains(allowed));
  }
}

TEST_CASE("recipes: choices are checked before any data is read", "[options]") {
  test::TempDir dir("early");
  const std::string path = dir.file("r.json");
  // The data folder does not exist: reading it would fail with another error.
  std::ofstream(path) << R"({"data": {"kind": "image_folder", "path": "/nonexistent/imagenet"},
                            "pruning": [{"importance": "l3"}], "output_dir": ")" + dir.file("out") + R"("})";
  const auto message = test::message_of([&] { recipe::run(path); });
  CHECK_THAT(message, Catch::Contains("at pruning.0.importance: unknown importance \"l3\""));
  CHECK_FALSE(std::filesystem::exists(dir.file("out")));  // nothing was started
}

TEST_CASE("options are defined once: recipe keys, C++ setters, checks and docs/recipes.md agree", "[options]") {
  // Each pruner option is a recipe key of a stage, with the C++ default.
  const auto defaults = recipe::defaults();
  const auto stage = recipe::load_text(R"({"pruning": [{}]})", "x");
  for (const auto& spec : prune::PrunerOptions::specs()) CHECK_THAT(stage, Catch::Contains("\"" + spec.key + "\""));
  CHECK_THAT(defaults, Catch::Contains("\"lr_schedule\"") && Catch::Contains("\"latency_batches\""));
  // The same check from C++ and from a recipe.
  CHECK_THAT(test::message_of([] { prune::PrunerOptions().ratio(1.5).validate(); }),
             Catch::Contains("ratio must be in [0, 1), got 1.5"));
  CHECK_THAT(recipe_error(R"({"pruning": [{"ratio": 1.5}]})"), Catch::Contains("at pruning.0.ratio: must be in [0, 1), got 1.5"));
  // docs/recipes.md carries the table the option lists make.
  std::ifstream doc(std::string(LIBPRUNE_SOURCE_DIR) + "/docs/recipes.md");
  std::stringstream text;
  text << doc.rdbuf();
  INFO("regenerate it: build/libprune-run --print-options, between the markers in docs/recipes.md");
  CHECK_THAT(text.str(), Catch::Contains(recipe::options_markdown()));
}

TEST_CASE("user criteria: registered in C++, named by the pruner and a recipe; bad scores are errors", "[options]") {
  // Keeps the channels with the smallest L1 norm: the opposite of l1, so the choice shows.
  importance::register_criterion("inverse_l1", [](const importance::GroupTensors& g) {
    std::vector<double> out;
    for (size_t m = 0; m < g.group.members.size(); ++m) {
      if (!g.tensors[m].defined()) continue;
      const auto& member = g.group.members[m];
      const auto w = g.tensors[m].detach().abs().movedim(member.dim, 0);
      const auto per = w.reshape({w.size(0), -1}).sum(1);
      auto units = g.per_unit(m, per);
      if (out.empty()) out.assign(units.size(), 0.0);
      for (size_t u = 0; u < units.size(); ++u) out[u] -= units[u];
    }
    return out;
  });
  CHECK_THAT(options::join(importance::criteria()), Catch::Contains("random, mask_grad, inverse_l1"));
  CHECK_THAT(test::message_of([] { importance::register_criterion("l1", [](const importance::GroupTensors&) {
               return std::vector<double>{};
             }); }),
             Catch::Contains("\"l1\" is already a built-in criterion"));
  auto x = torch::randn({2, 1, 16, 16});
  auto a = small_resnet(), b = small_resnet();
  prune::Pruner(a, forward_of(a, x), prune::PrunerOptions().ratio(0.5).importance("inverse_l1").ignored_layers({"fc"})).step();
  prune::Pruner(b, forward_of(b, x), prune::PrunerOptions().ratio(0.5).importance("l1").ignored_layers({"fc"})).step();
  CHECK(widths(a) == widths(b));
  CHECK_FALSE(torch::equal(a->named_parameters()["conv1.weight"], b->named_parameters()["conv1.weight"]));
  // The recipe names it too.
  const auto r = recipe::read_text(R"({"pruning": [{"importance": "inverse_l1"}]})", "x");
  CHECK(r.pruning[0].pruner.importance() == "inverse_l1");

  // The wrong count, and a NaN: errors naming the criterion and the group; the model is unchanged.
  importance::register_criterion("too_few", [](const importance::GroupTensors&) { return std::vector<double>{1.0}; });
  importance::register_criterion("nan", [](const importance::GroupTensors& g) {
    std::vector<double> s(static_cast<size_t>(g.group.size()), 1.0);
    s.back() = std::nan("");
    return s;
  });
  auto c = small_resnet();
  const auto before = test::snapshot(*c);
  CHECK_THAT(test::message_of([&] { prune::Pruner(c, forward_of(c, x), prune::PrunerOptions().importance("too_few")).step(); }),
             Catch::Contains("importance \"too_few\" returned 1 scores for group") && Catch::Contains("Fix:"));
  CHECK_THAT(test::message_of([&] { prune::Pruner(c, forward_of(c, x), prune::PrunerOptions().importance("nan")).step(); }),
             Catch::Contains("importance \"nan\" returned nan for channel") && Catch::Contains("of group"));
  CHECK(test::same(before, test::snapshot(*c)));
  for (const char* name : {"inverse_l1", "too_few", "nan"}) CHECK(importance::unregister_criterion(name));
  CHECK_FALSE(importance::unregister_criterion("l1"));
}

TEST_CASE("op rules: one rule alone on a hand-built trace; an alias for an unknown op", "[options]") {
  // weight[4, 3, 1, 1] -> Convolution -> MyGelu -> Convolution(weight2[2, 4, 1, 1]): the first conv's
  // four channels reach the second through an op the table does not know, until it is aliased.
  auto node = [](std::string op, graph::Shape out, std::vector<int> inputs, std::vector<graph::Shape> in_shapes) {
    graph::TracedNode n;
    n.op = op;
    n.output_shapes = {out};
    n.inputs = inputs;
    n.input_slots.assign(inputs.size(), 0);
    n.input_shapes = in_shapes;
    return n;
  };
  std::vector<graph::TracedNode> nodes;
  nodes.push_back(node("AccumulateGrad", {4, 3, 1, 1}, {}, {}));
  nodes.back().param_name = "a.weight";
  nodes.push_back(node("Convolution", {1, 4, 8, 8}, {-1, 0}, {{1, 3, 8, 8}, {4, 3, 1, 1}}));
  nodes.push_back(node("MyGelu", {1, 4, 8, 8}, {1}, {{1, 4, 8, 8}}));
  nodes.push_back(node("AccumulateGrad", {2, 4, 1, 1}, {}, {}));
  nodes.back().param_name = "b.weight";
  nodes.push_back(node("Convolution", {1, 2, 8, 8}, {2, 3}, {{1, 4, 8, 8}, {2, 4, 1, 1}}));
  const auto trace = graph::Trace::from_nodes(nodes, {4}, {{1, 2, 8, 8}});
  auto group_of = [](const graph::DependencyGraph& g) {
    for (const auto& grp : g.groups()) {
      if (grp.name() == "a.weight") return grp;
    }
    FAIL("no group a.weight");
    return graph::Group{};
  };
  const auto unknown = group_of(graph::DependencyGraph(trace));
  CHECK(unknown.pinned);
  CHECK_THAT(unknown.reason, Catch::Contains("MyGelu: op not understood"));
  graph::register_op_alias("MyGelu", "Gelu");
  const auto known = group_of(graph::DependencyGraph(trace));
  CHECK_FALSE(known.pinned);
  CHECK(known.size() == 4);
  CHECK(known.members.size() == 2);  // a.weight dim 0 and b.weight dim 1, one channel each
  CHECK_THAT(test::message_of([] { graph::register_op_alias("MyOp", "NoSuchOp"); }),
             Catch::Contains("\"NoSuchOp\" has no rule") && Catch::Contains("Convolution"));
  // An alias of a batch norm is one for batch-norm folding too; other norms are not.
  CHECK_FALSE(graph::is_batch_norm_op("MyBatchNorm"));
  graph::register_op_alias("MyBatchNorm", "NativeBatchNorm");
  CHECK(graph::is_batch_norm_op("MyBatchNorm"));
  CHECK(graph::is_batch_norm_op("NativeBatchNorm"));
  CHECK_FALSE(graph::is_batch_norm_op("NativeLayerNorm"));
}

TEST_CASE("op rules: fake quantization passes channels through", "[options]") {
  torch::nn::Conv2d a(torch::nn::Conv2dOptions(3, 8, 1)), b(torch::nn::Conv2dOptions(8, 4, 1));
  auto x = torch::randn({1, 3, 4, 4});
  graph::NamedTensors params;
  for (const auto& p : a->named_parameters()) params.emplace_back("a." + p.key(), p.value());
  for (const auto& p : b->named_parameters()) params.emplace_back("b." + p.key(), p.value());
  const auto trace = graph::Trace::capture(
      [&] {
        auto h = torch::fake_quantize_per_tensor_affine(a->forward(x), 0.1, 0, 0, 255);
        return std::vector<torch::Tensor>{b->forward(h)};
      },
      params);
  graph::DependencyGraph g(trace);
  bool found = false;
  for (const auto& grp : g.groups()) {
    if (grp.name() != "a.weight") continue;
    found = true;
    CHECK_FALSE(grp.pinned);
    CHECK(grp.size() == 8);
  }
  CHECK(found);
}

TEST_CASE("recipe: every shipped config reads and checks", "[recipe]") {
  size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(LIBPRUNE_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".json") continue;
    INFO(entry.path().string());
    // The ResNet-50 recipe asks for CUDA; elsewhere it is read on the CPU.
    std::vector<std::string> sets;
    if (!torch::cuda::is_available()) sets.push_back("training.device=cpu");
    CHECK_NOTHROW(recipe::read(entry.path().string(), sets));
    ++n;
  }
  CHECK(n >= 10);
}
