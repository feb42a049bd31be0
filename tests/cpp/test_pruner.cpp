#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;
using prune::Pruner;
using prune::PrunerOptions;

namespace {
graph::Forward forward_of(models::ResNet m, torch::Tensor x) {
  return [m, x]() mutable { return std::vector<torch::Tensor>{m->forward(x)}; };
}
}  // namespace

TEST_CASE("prune resnet18 by 50%: smaller dense model, same output shape, options updated", "[prune]") {
  torch::manual_seed(0);
  auto m = models::resnet18(models::ModelOptions().num_classes(10));
  auto x = torch::randn({2, 3, 64, 64});
  const auto before = measure::count_ops(m, x);
  Pruner pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(0.5).importance("l2").ignored_layers({"fc"}));
  const auto plan = pruner.step();
  CHECK_FALSE(plan.empty());
  CHECK(pruner.history().size() == 1);
  CHECK(m->conv1->weight.size(0) == 32);
  CHECK(m->conv1->options.out_channels() == 32);
  CHECK(m->bn1->running_mean.size(0) == 32);
  CHECK(m->bn1->options.num_features() == 32);
  auto block = m->stages[3]->ptr<models::BasicBlockImpl>(0);
  CHECK(block->conv1->weight.sizes() == torch::IntArrayRef({256, 128, 3, 3}));
  CHECK(m->fc->weight.sizes() == torch::IntArrayRef({10, 256}));
  CHECK(m->fc->options.in_features() == 256);
  m->eval();
  torch::NoGradGuard no_grad;
  CHECK(m->forward(x).sizes() == torch::IntArrayRef({2, 10}));
  const auto after = measure::count_ops(m, x);
  CHECK(after.macs < before.macs * 0.3);
  CHECK(after.params < before.params * 0.3);
}

TEST_CASE("pruning mid-training keeps the optimizer: SGD momentum shrinks and the loss keeps falling", "[prune]") {
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10).in_channels(1));
  auto x = torch::randn({32, 1, 16, 16});
  auto y = torch::randint(10, {32}, torch::kLong);
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto train = [&](int steps) {
    double loss_value = 0;
    m->train();
    for (int s = 0; s < steps; ++s) {
      opt.zero_grad();
      auto loss = torch::cross_entropy_loss(m->forward(x), y);
      loss.backward();
      opt.step();
      loss_value = loss.item<double>();
    }
    return loss_value;
  };
  train(10);
  Pruner pruner(m.ptr(), forward_of(m, x.slice(0, 0, 2)), PrunerOptions().ratio(0.3).ignored_layers({"fc"}));
  pruner.step(&opt);
  // Every momentum buffer has its parameter's new shape.
  for (const auto& p : m->parameters()) {
    auto& state = opt.state().at(c10::guts::to_string(p.unsafeGetTensorImpl()));
    CHECK(static_cast<torch::optim::SGDParamState&>(*state).momentum_buffer().sizes() == p.sizes());
  }
  CHECK(m->conv1->weight.size(0) == 12);  // 16 - floor(16 * 0.3)
  const double right_after = train(1);
  const double later = train(15);
  CHECK(later < right_after);
}

TEST_CASE("plans replay on a fresh model and pruned weights load; JSON round trip", "[prune]") {
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  auto x = torch::randn({2, 3, 32, 32});
  Pruner pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(0.5).round_to(8).ignored_layers({"fc"}));
  const auto plan = pruner.step();
  for (const auto& c : plan.cuts) {
    if (c.tensor.size() > 7 && c.tensor.compare(c.tensor.size() - 7, 7, ".weight") == 0 && c.dim == 0) {
      CHECK(c.keep.size() % 8 == 0);
    }
  }
  const auto text = plan.to_json();
  const auto parsed = layers::PruningPlan::from_json(text);
  CHECK(parsed.to_json() == text);

  auto fresh = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  layers::apply_plan(*fresh, parsed);
  io::load_state_dict(*fresh, io::state_dict(*m), "pruned state_dict");
  m->eval();
  fresh->eval();
  torch::NoGradGuard no_grad;
  CHECK(torch::allclose(m->forward(x), fresh->forward(x)));
}

TEST_CASE("global ranking removes the ratio overall, with at least min_channels per group", "[prune]") {
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  auto x = torch::randn({2, 3, 32, 32});
  Pruner pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(0.4).global_pruning(true).min_channels(2).ignored_layers({"fc"}));
  const auto plan = pruner.step();
  int64_t before = 0, after = 0;
  for (const auto& [name, sizes] : plan.groups) {
    before += sizes.first;
    after += sizes.second;
    CHECK(sizes.second >= 2);
  }
  CHECK(before > 0);
  CHECK(static_cast<double>(before - after) / static_cast<double>(before) == Approx(0.4).margin(0.02));
}

namespace {
// A model whose own code hard-codes a channel count in a reshape.
struct HardCoded : torch::nn::Module {
  torch::nn::Conv2d a{nullptr}, b{nullptr};
  torch::nn::Linear fc{nullptr};
  HardCoded() {
    a = register_module("a", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    b = register_module("b", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1)));
    fc = register_module("fc", torch::nn::Linear(8 * 4 * 4, 5));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = b(torch::relu(a(x)));
    return fc(x.reshape({x.size(0), 8 * 4 * 4}));
  }
};
}  // namespace

TEST_CASE("verification: a hard-coded reshape pins its group, the rest is still cut", "[prune]") {
  auto m = std::make_shared<HardCoded>();
  auto x = torch::randn({2, 3, 4, 4});
  Pruner pruner(m, [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; }, PrunerOptions().ratio(0.5));
  pruner.step();
  CHECK(m->a->weight.size(0) == 4);
  CHECK(m->b->weight.size(0) == 8);
  REQUIRE(pruner.verification_pins().size() == 1);
  CHECK_THAT(pruner.verification_pins()[0], Catch::Contains("b.weight"));
  // The graph shows it pinned, with the reason, and later steps leave it alone without a retry.
  CHECK_THAT(pruner.graph().explain(), Catch::Contains("verification: the forward failed"));
  pruner.set_ratio(0.75);
  pruner.step();
  CHECK(pruner.verification_pins().empty());
  CHECK(m->b->weight.size(0) == 8);
  torch::NoGradGuard no_grad;
  CHECK(m->forward(x).sizes() == torch::IntArrayRef({2, 5}));
}

TEST_CASE("remove_units: verified like a ratio cut; a cut the model's code breaks changes nothing", "[prune]") {
  auto m = std::make_shared<HardCoded>();
  auto x = torch::randn({2, 3, 4, 4});
  Pruner pruner(m, [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; });
  const auto before = test::snapshot(*m);
  CHECK_THROWS_WITH(pruner.remove_units({{"b", {0}}}), Catch::Contains("fails verification") && Catch::Contains("nothing"));
  CHECK(test::same(test::snapshot(*m), before));
  pruner.remove_units({{"a", {1, 6}}});
  CHECK(m->a->weight.size(0) == 6);
  CHECK(m->b->weight.size(1) == 6);
  CHECK(pruner.history().size() == 1);
}

TEST_CASE("pruner bad input: clear errors, model unchanged", "[prune]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  auto x = torch::randn({2, 3, 32, 32});
  const auto before = test::snapshot(*m);
  for (double r : {1.0, -0.1, 1.5}) {
    CHECK_THAT(test::message_of([&] { Pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(r)); }),
               Catch::Contains("ratio must be in [0, 1)"));
  }
  CHECK_THAT(test::message_of([&] { Pruner(m.ptr(), forward_of(m, x), PrunerOptions().importance("l3")); }),
             Catch::Contains("unknown importance \"l3\"") && Catch::Contains("l1, l2"));
  CHECK_THAT(test::message_of([&] { Pruner(m.ptr(), forward_of(m, x), PrunerOptions().ignored_layers({"fc2"})); }),
             Catch::Contains("ignored module \"fc2\" is not in the model"));
  // Example inputs the model cannot run.
  CHECK_THAT(test::message_of([&] { Pruner(m.ptr(), forward_of(m, torch::randn({2, 1, 32, 32}))).step(); }),
             Catch::Contains("forward failed on the example inputs"));
  // A plan recorded on another model.
  auto other = models::resnet18(models::ModelOptions().num_classes(10));
  auto other_plan = Pruner(other.ptr(), forward_of(other, torch::randn({2, 3, 32, 32})),
                           PrunerOptions().ignored_layers({"fc"})).plan();
  CHECK_THAT(test::message_of([&] { layers::apply_plan(*m, other_plan); }), Catch::Contains("another model"));
  // An optimizer over another model's parameters.
  torch::optim::SGD foreign(other->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  CHECK_THAT(test::message_of([&] { Pruner(m.ptr(), forward_of(m, x), PrunerOptions().ignored_layers({"fc"})).step(&foreign); }),
             Catch::Contains("optimizer does not hold parameter"));
  // A plan whose last cut is invalid changes nothing, although earlier cuts were fine.
  auto plan = Pruner(m.ptr(), forward_of(m, x), PrunerOptions().ignored_layers({"fc"})).plan();
  plan.cuts.back().keep.push_back(100000);
  CHECK_THAT(test::message_of([&] { layers::apply_plan(*m, plan); }), Catch::Contains("not sorted, unique and within"));
  CHECK_THAT(test::message_of([&] { layers::PruningPlan::from_json("{\"format\": 1}"); }),
             Catch::Contains("libprune.plan/1"));
  CHECK(test::same(before, test::snapshot(*m)));
}

TEST_CASE("L1 and L2 importance sum over every member of the group, worked by hand", "[prune]") {
  torch::nn::Sequential net(torch::nn::Linear(2, 3), torch::nn::Linear(3, 1));
  {
    torch::NoGradGuard no_grad;
    auto* a = net[0]->as<torch::nn::Linear>();
    auto* b = net[1]->as<torch::nn::Linear>();
    a->weight.copy_(torch::tensor({{1.0, -2.0}, {0.5, 0.5}, {-3.0, 0.0}}));
    a->bias.copy_(torch::tensor({1.0, 0.0, -1.0}));
    b->weight.copy_(torch::tensor({{2.0, -1.0, 0.0}}));
  }
  auto x = torch::randn({4, 2});
  graph::NamedTensors params;
  std::map<std::string, torch::Tensor> by_name;
  for (const auto& p : net->named_parameters()) {
    params.emplace_back(p.key(), p.value());
    by_name[p.key()] = p.value();
  }
  graph::DependencyGraph g(graph::Trace::capture([&] { return std::vector<torch::Tensor>{net->forward(x)}; }, params), {});
  const graph::Group* hidden = nullptr;
  for (const auto& grp : g.groups()) {
    if (grp.name() == "0.weight" && !grp.pinned) hidden = &grp;
  }
  REQUIRE(hidden);
  INFO(g.explain());
  REQUIRE(hidden->size() == 3);
  // Unit j: row j of 0.weight, 0.bias[j], column j of 1.weight.
  const auto l1 = importance::score(*hidden, by_name, importance::ImportanceOptions("l1"));
  CHECK(l1[0] == Approx(1 + 2 + 1 + 2));
  CHECK(l1[1] == Approx(0.5 + 0.5 + 0 + 1));
  CHECK(l1[2] == Approx(3 + 0 + 1 + 0));
  const auto l2 = importance::score(*hidden, by_name, importance::ImportanceOptions("l2"));
  CHECK(l2[0] == Approx(std::sqrt(1.0 + 4 + 1 + 4)));
  CHECK(l2[1] == Approx(std::sqrt(0.25 + 0.25 + 0 + 1)));
  CHECK(l2[2] == Approx(std::sqrt(9.0 + 0 + 1 + 0)));
}

TEST_CASE("deterministic: the same model, seed and options give the same plan", "[prune]") {
  auto plan_text = [] {
    torch::manual_seed(7);
    auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
    auto x = torch::ones({2, 3, 32, 32});
    return Pruner(m.ptr(), forward_of(m, x), PrunerOptions().ratio(0.4).global_pruning(true).ignored_layers({"fc"}))
        .plan()
        .to_json();
  };
  const auto a = plan_text();
  CHECK(a == plan_text());
  CHECK(a.find("\"keep\"") != std::string::npos);
}

TEST_CASE("scoring in one pass: the magnitude cache gives each dim's sums, dense and channels_last", "[prune]") {
  torch::manual_seed(0);
  importance::MagnitudeCache cache;
  for (const bool channels_last : {false, true}) {
    auto w = torch::randn({12, 10, 3, 3});
    if (channels_last) w = w.contiguous(torch::MemoryFormat::ChannelsLast);
    for (const bool squared : {false, true}) {
      const auto m = (squared ? w.square() : w.abs()).to(torch::kFloat64);
      INFO("channels_last " << channels_last << ", squared " << squared);
      CHECK(torch::allclose(cache.per_index(w, 0, squared), m.sum({1, 2, 3}), 1e-5, 1e-6));
      CHECK(torch::allclose(cache.per_index(w, 1, squared), m.sum({0, 2, 3}), 1e-5, 1e-6));
    }
  }
  auto fc = torch::randn({5, 7});
  CHECK(torch::allclose(cache.per_index(fc, 1, true), fc.square().to(torch::kFloat64).sum(0), 1e-5, 1e-6));
  const auto scale = torch::randn({5});
  CHECK(torch::allclose(cache.per_index(scale, 0, false), scale.abs().to(torch::kFloat64)));
  CHECK_FALSE(cache.per_index(scale, 1, true).defined());
  // The pruner's scores (with the cache) equal the criterion's own (without), group by group.
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  auto x = torch::randn({1, 3, 32, 32});
  prune::Pruner pruner(m.ptr(), forward_of(m, x), PrunerOptions().importance("l2").ignored_layers({"fc"}));
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : m->named_parameters()) params[p.key()] = p.value();
  importance::MagnitudeCache shared;
  const auto graph = pruner.graph();
  for (const auto& grp : graph.groups()) {
    const auto direct = importance::score(grp, params, importance::ImportanceOptions("l2"));
    const auto cached = importance::score(grp, params, importance::ImportanceOptions("l2"), nullptr, &shared);
    REQUIRE(direct.size() == cached.size());
    for (size_t u = 0; u < direct.size(); ++u) CHECK(cached[u] == Approx(direct[u]).epsilon(1e-6));
  }
}
