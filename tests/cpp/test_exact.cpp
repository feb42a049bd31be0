// The exactness property (layers/exact.h): a pruned model equals the dense one with the plan's
// channels silenced, and the pruner's verification rolls back a cut that runs but computes
// something else.
#include "helpers.h"

#include "libprune/layers/exact.h"
#include "libprune/models/registry.h"
#include "libprune/prune/pruner.h"

using libprune::layers::check_exact;
using libprune::layers::ModuleAccess;
using libprune::prune::Pruner;
using libprune::prune::PrunerOptions;

namespace {

// Non-trivial eval statistics and norm affines, so a norm that mixes up its channels shows.
void randomise_norms(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& item : m.named_buffers()) {
    auto& b = item.value();
    if (item.key().find("running_mean") != std::string::npos) b.copy_(torch::randn_like(b) * 0.2);
    if (item.key().find("running_var") != std::string::npos) b.copy_(torch::rand_like(b) + 0.5);
  }
  for (auto& p : m.parameters()) {
    if (p.dim() == 1) p.copy_(torch::rand_like(p) + 0.5);
  }
}

libprune::models::ModelPtr zoo(const std::string& name) {
  torch::manual_seed(3);
  auto m = libprune::models::create(name, libprune::models::ModelOptions().num_classes(10));
  torch::manual_seed(4);
  randomise_norms(*m);
  m->eval();
  return m;
}

libprune::graph::Forward forward_of(const libprune::models::ModelPtr& m, const torch::Tensor& x) {
  return [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; };
}

// conv -> softmax across the channels -> conv: cutting `a` renormalises the kept channels.
struct SoftmaxAcross : torch::nn::Module {
  torch::nn::Conv2d a{nullptr}, b{nullptr}, c{nullptr};
  SoftmaxAcross() {
    a = register_module("a", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 1)));
    b = register_module("b", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 1)));
    c = register_module("c", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 4, 1)));
  }
  torch::Tensor forward(torch::Tensor x) { return c(torch::relu(b(torch::softmax(a(x), 1)))); }
};

// Heads read from a plain member no adapter knows, the head size from -1: cutting a head makes the
// remaining heads narrower instead of fewer, and the model runs on.
struct OpaqueHeads : torch::nn::Module {
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, out{nullptr};
  int64_t heads = 4;
  OpaqueHeads() {
    q = register_module("q", torch::nn::Linear(16, 16));
    k = register_module("k", torch::nn::Linear(16, 16));
    v = register_module("v", torch::nn::Linear(16, 16));
    out = register_module("out", torch::nn::Linear(16, 16));
  }
  torch::Tensor split(const torch::Tensor& t) { return t.view({t.size(0), t.size(1), heads, -1}).transpose(1, 2); }
  torch::Tensor forward(torch::Tensor x) {
    auto a = torch::softmax(torch::matmul(split(q(x)), split(k(x)).transpose(-2, -1)), -1);
    auto o = torch::matmul(a, split(v(x))).transpose(1, 2);
    return out(o.reshape({x.size(0), x.size(1), -1}));
  }
};

}  // namespace

TEST_CASE("exact: C++ zoo models pruned by half equal the masked dense model", "[exact]") {
  for (const std::string name : {"cifar_resnet20", "resnet18", "mobilenet_v2", "vgg11_bn", "resnext50_32x4d"}) {
    const auto x = torch::randn({2, 3, 32, 32});
    auto dense = zoo(name), pruned = zoo(name);
    std::string classifier;  // the last linear
    for (const auto& item : pruned->named_modules()) {
      if (item.value()->as<torch::nn::Linear>()) classifier = item.key();
    }
    Pruner pruner(pruned, forward_of(pruned, x), PrunerOptions().ratio(0.5).ignored_layers({classifier}));
    const auto plan = pruner.step();
    REQUIRE(!plan.empty());
    CHECK(pruner.verification_pins().empty());
    ModuleAccess before(dense), after(pruned);
    const auto report = check_exact(before, forward_of(dense, x), after, forward_of(pruned, x), plan);
    INFO(name << ": " << report.to_string());
    CHECK(report.exact);
    CHECK(report.worst < 1e-5);
    CHECK(report.normalised.empty());
  }
}

TEST_CASE("exact: a model cut by a plan with one wrong index is caught", "[exact]") {
  const auto x = torch::randn({2, 3, 32, 32});
  auto dense = zoo("cifar_resnet20"), pruned = zoo("cifar_resnet20");
  Pruner pruner(pruned, forward_of(pruned, x), PrunerOptions().ratio(0.5).ignored_layers({"fc"}).verify(false));
  auto plan = pruner.plan();
  // The consumer side of layer2.0.conv1's channels keeps a removed column instead of a kept one:
  // every shape still fits.
  bool tampered = false;
  for (auto& c : plan.cuts) {
    if (c.tensor != "layer2.0.conv2.weight" || c.dim != 1) continue;
    std::vector<char> kept(static_cast<size_t>(c.original_size), 0);
    for (auto i : c.keep) kept[static_cast<size_t>(i)] = 1;
    for (int64_t i = 0; i < c.original_size && !tampered; ++i) {
      if (!kept[static_cast<size_t>(i)]) {
        kept[static_cast<size_t>(i)] = 1;
        kept[static_cast<size_t>(c.keep.back())] = 0;
        tampered = true;
      }
    }
    c.keep.clear();
    for (int64_t i = 0; i < c.original_size; ++i) {
      if (kept[static_cast<size_t>(i)]) c.keep.push_back(i);
    }
  }
  REQUIRE(tampered);
  libprune::layers::apply_plan(*pruned, plan);
  ModuleAccess before(dense), after(pruned);
  const auto report = check_exact(before, forward_of(dense, x), after, forward_of(pruned, x), plan);
  INFO(report.to_string());
  CHECK(!report.exact);
  CHECK(report.worst > 1e-3);
  CHECK(test::same(test::snapshot(*dense), test::snapshot(*zoo("cifar_resnet20"))));  // before is as it was
}

TEST_CASE("exact: split_by_group and merge_plans give back the plan", "[exact]") {
  const auto x = torch::randn({1, 3, 32, 32});
  auto m = zoo("cifar_resnet20");
  Pruner pruner(m, forward_of(m, x), PrunerOptions().ratio(0.5).ignored_layers({"fc"}));
  const auto plan = pruner.plan();
  const auto g = pruner.graph();
  const auto parts = libprune::layers::split_by_group(g, plan);
  CHECK(parts.size() == plan.groups.size());
  std::vector<const libprune::layers::PruningPlan*> ptrs;
  for (const auto& p : parts) ptrs.push_back(&p.plan);
  auto whole = plan;
  whole.importance_kept = -1;  // a share of the whole plan's groups: no part carries it
  CHECK(libprune::layers::merge_plans(ptrs).to_json() == whole.to_json());
}

TEST_CASE("exact: verification pins a cut that runs but computes something else", "[exact]") {
  torch::manual_seed(0);
  SECTION("a softmax across the channels") {
    auto m = std::make_shared<SoftmaxAcross>();
    const auto x = torch::randn({2, 3, 4, 4});
    Pruner pruner(m, [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; },
                  PrunerOptions().ratio(0.5).ignored_layers({"c"}));
    pruner.step();
    CHECK(m->a->weight.size(0) == 8);  // pinned: the softmax's channels stay
    CHECK(m->b->weight.size(0) == 4);  // the rest is cut
    REQUIRE(pruner.verification_pins().size() == 1);
    CHECK_THAT(pruner.verification_pins()[0], Catch::StartsWith("a.weight") && Catch::Contains("computes something else"));
  }
  SECTION("heads in an attribute no adapter knows") {
    auto m = std::make_shared<OpaqueHeads>();
    const auto x = torch::randn({2, 5, 16});
    Pruner pruner(m, [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; },
                  PrunerOptions().ratio(0.5).ignored_layers({"out"}));
    pruner.step();
    CHECK(m->q->weight.size(0) == 16);
    CHECK(m->v->weight.size(0) == 16);
    CHECK(!pruner.verification_pins().empty());
    CHECK_THAT(pruner.graph().explain(), Catch::Contains("computes something else"));
  }
}

TEST_CASE("exact: a GroupNorm's channels are cut and reported as normalised", "[exact]") {
  const auto build = [] {  // the same weights each time
    torch::manual_seed(0);
    return std::make_shared<torch::nn::SequentialImpl>(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3)),
                                                       torch::nn::GroupNorm(torch::nn::GroupNormOptions(2, 8)),
                                                       torch::nn::ReLU(), torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 4, 1)));
  };
  auto m = build(), d = build();
  const auto x = torch::randn({2, 3, 6, 6});
  auto fwd = [x](std::shared_ptr<torch::nn::SequentialImpl> s) {
    return [s, x] { return std::vector<torch::Tensor>{s->forward(x)}; };
  };
  Pruner pruner(m, fwd(m), PrunerOptions().ratio(0.5).ignored_layers({"3"}));
  const auto plan = pruner.step();
  CHECK(m->ptr<torch::nn::Conv2dImpl>(0)->weight.size(0) == 4);
  CHECK(pruner.verification_pins().empty());
  ModuleAccess before(d), after(m);
  const auto report = check_exact(before, fwd(d), after, fwd(m), plan);
  CHECK(report.exact);
  CHECK(report.normalised == std::vector<std::string>{"0.weight"});
  CHECK_THAT(pruner.graph().explain(), Catch::Contains("normalised across"));
}
