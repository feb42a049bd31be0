#include "helpers.h"
#include "libprune/graph/dependency_graph.h"
#include "libprune/libprune.h"

using namespace libprune;

namespace {

graph::DependencyGraph graph_of(torch::nn::Module& m, const std::function<torch::Tensor()>& fwd) {
  const layers::ModuleAccess access(m.shared_from_this());
  return graph::DependencyGraph(graph::Trace::capture(m, [&] { return std::vector<torch::Tensor>{fwd()}; }),
                                layers::ModelTensors(access).companions);
}

const graph::Group* group_with(const graph::DependencyGraph& g, const std::string& tensor, int64_t dim) {
  for (const auto& grp : g.groups()) {
    for (const auto& m : grp.members) {
      if (m.tensor == tensor && m.dim == dim) return &grp;
    }
  }
  return nullptr;
}

bool has(const graph::Group& g, const std::string& tensor, int64_t dim) {
  return std::any_of(g.members.begin(), g.members.end(),
                     [&](const graph::Member& m) { return m.tensor == tensor && m.dim == dim; });
}

}  // namespace

TEST_CASE("graph: ResNet residual stages couple into one group per stage", "[graph]") {
  auto m = models::resnet18(models::ModelOptions().num_classes(10));
  auto x = torch::randn({2, 3, 64, 64});
  auto g = graph_of(*m, [&] { return m->forward(x); });
  INFO(g.explain());
  // 4 residual streams + 8 block-internal widths + the pinned input and output.
  CHECK(g.groups().size() == 14);
  const auto* stem = group_with(g, "conv1.weight", 0);
  REQUIRE(stem);
  CHECK_FALSE(stem->pinned);
  CHECK(stem->size() == 64);
  CHECK(has(*stem, "bn1.running_mean", 0));
  CHECK(has(*stem, "layer1.0.conv2.weight", 0));
  CHECK(has(*stem, "layer1.1.bn2.bias", 0));
  CHECK(has(*stem, "layer2.0.conv1.weight", 1));
  CHECK(has(*stem, "layer2.0.downsample.0.weight", 1));
  const auto* last = group_with(g, "layer4.0.downsample.0.weight", 0);
  REQUIRE(last);
  CHECK(has(*last, "fc.weight", 1));
  CHECK(has(*last, "layer4.1.conv2.weight", 0));
  const auto* inner = group_with(g, "layer3.1.conv1.weight", 0);
  REQUIRE(inner);
  CHECK(inner->members.size() == 6);  // conv1 out, bn1 (4 tensors), conv2 in
  const auto* out = group_with(g, "fc.weight", 0);
  REQUIRE(out);
  CHECK(out->pinned);
  CHECK_THAT(out->reason, Catch::Contains("model output"));
  const auto* input = group_with(g, "conv1.weight", 1);
  REQUIRE(input);
  CHECK(input->pinned);
}

TEST_CASE("graph: depthwise convs tie input to output; VGG flatten maps channels to feature blocks", "[graph]") {
  auto mb = models::mobilenet_v2(models::ModelOptions().num_classes(10));
  auto g = graph_of(*mb, [&] { return mb->forward(torch::randn({2, 3, 32, 32})); });
  INFO(g.explain());
  const auto* expand = group_with(g, "features.2.conv.0.0.weight", 0);
  REQUIRE(expand);
  CHECK_FALSE(expand->pinned);
  CHECK(has(*expand, "features.2.conv.1.0.weight", 0));  // depthwise
  CHECK(has(*expand, "features.2.conv.2.weight", 1));

  auto vgg = models::vgg11_bn(models::ModelOptions().num_classes(10));
  auto gv = graph_of(*vgg, [&] { return vgg->forward(torch::randn({2, 3, 32, 32})); });
  const auto* last_conv = group_with(gv, "features.25.weight", 0);
  REQUIRE(last_conv);
  CHECK(has(*last_conv, "classifier.0.weight", 1));
  // Channel 3 owns features 3*49 .. 3*49+48 of the first linear layer.
  const auto pos = static_cast<size_t>(std::find(last_conv->members.begin(), last_conv->members.end(),
                                                 graph::Member{"classifier.0.weight", 1}) -
                                       last_conv->members.begin());
  const auto idx = last_conv->unit(3, pos);
  REQUIRE(idx.size() == 49);
  CHECK(idx.front() == 3 * 49);
  CHECK(idx.back() == 3 * 49 + 48);
}

namespace {
struct CatNet : torch::nn::Module {
  torch::nn::Conv2d a{nullptr}, b{nullptr}, c{nullptr}, d{nullptr};
  CatNet() {
    a = register_module("a", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    b = register_module("b", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3).padding(1)));
    c = register_module("c", torch::nn::Conv2d(torch::nn::Conv2dOptions(12, 6, 1)));
    d = register_module("d", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 2, 1)));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto y = c(torch::cat({a(x), b(x)}, 1));
    auto parts = y.split(3, 1);  // two halves of c's output
    auto z = torch::cat({parts[0].sigmoid() * parts[1], torch::erfinv(d(x) * 0.1)}, 1);
    return z.mean({2, 3});
  }
};
}  // namespace

TEST_CASE("graph: concat offsets, split halves, and unknown ops pin with a reason", "[graph]") {
  auto m = std::make_shared<CatNet>();
  auto g = graph_of(*m, [&] { return m->forward(torch::randn({2, 3, 8, 8})); });
  INFO(g.explain());
  const auto* ga = group_with(g, "a.weight", 0);
  const auto* gb = group_with(g, "b.weight", 0);
  REQUIRE(ga);
  REQUIRE(gb);
  CHECK(ga != gb);
  CHECK(ga->size() == 8);
  CHECK(gb->size() == 4);
  // b's channel 0 is c's input channel 8.
  const auto pos = static_cast<size_t>(std::find(gb->members.begin(), gb->members.end(), graph::Member{"c.weight", 1}) -
                                       gb->members.begin());
  REQUIRE(pos < gb->members.size());
  CHECK(gb->unit(0, pos).vec() == std::vector<int64_t>{8});
  // c's two halves are multiplied elementwise, so channel j and j+3 are one unit; and the
  // product reaches the model output, so they are pinned.
  const auto* gc = group_with(g, "c.weight", 0);
  REQUIRE(gc);
  CHECK(gc->pinned);
  CHECK(gc->size() == 3);
  const auto* gd = group_with(g, "d.weight", 0);
  REQUIRE(gd);
  CHECK(gd->pinned);
  CHECK_THAT(gd->reason, Catch::Contains("Erfinv") && Catch::Contains("not understood"));
  CHECK_THAT(g.explain(), Catch::Contains("PINNED"));
}

TEST_CASE("graph: grouped convs cut the same local channels in every group (ResNeXt)", "[graph]") {
  auto m = models::resnext50_32x4d(models::ModelOptions().num_classes(10));
  auto x = torch::randn({2, 3, 64, 64});
  auto g = graph_of(*m, [&] { return m->forward(x); });
  const auto* inner = group_with(g, "layer1.0.conv1.weight", 0);
  REQUIRE(inner);
  CHECK_FALSE(inner->pinned);
  CHECK(inner->size() == 4);  // 128 channels in 32 groups of 4: one unit per local index
  CHECK(has(*inner, "layer1.0.conv2.weight", 0));
  CHECK(has(*inner, "layer1.0.conv2.weight", 1));
  CHECK(inner->unit(1, 0).size() == 32);  // a unit spans one channel of every group

  prune::Pruner pruner(m.ptr(), [m, x]() mutable { return std::vector<torch::Tensor>{m->forward(x)}; },
                          prune::PrunerOptions().ratio(0.5).ignored_layers({"fc"}));
  pruner.step();
  auto block = m->stages[0]->ptr<models::BottleneckImpl>(0);
  CHECK(block->conv2->weight.sizes() == torch::IntArrayRef({64, 2, 3, 3}));
  CHECK(block->conv2->options.groups() == 32);
  CHECK(block->conv2->options.in_channels() == 64);
  torch::NoGradGuard no_grad;
  m->eval();
  CHECK(m->forward(x).sizes() == torch::IntArrayRef({2, 10}));
}

namespace {
struct ShuffleNet : torch::nn::Module {
  torch::nn::Conv2d a{nullptr}, b{nullptr};
  ShuffleNet() {
    a = register_module("a", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 1)));
    b = register_module("b", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 4, 1)));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto y = a(x);
    const auto n = y.size(0), h = y.size(2), w = y.size(3);
    y = y.view({n, 2, y.size(1) / 2, h, w}).transpose(1, 2).reshape({n, -1, h, w});  // channel shuffle
    return b(y);
  }
};
}  // namespace

TEST_CASE("graph: a channel shuffle is followed as a permutation of channels", "[graph]") {
  auto m = std::make_shared<ShuffleNet>();
  auto x = torch::randn({2, 3, 4, 4});
  auto g = graph_of(*m, [&] { return m->forward(x); });
  INFO(g.explain());
  const auto* ga = group_with(g, "a.weight", 0);
  REQUIRE(ga);
  CHECK_FALSE(ga->pinned);
  const auto pos = static_cast<size_t>(std::find(ga->members.begin(), ga->members.end(), graph::Member{"b.weight", 1}) -
                                       ga->members.begin());
  REQUIRE(pos < ga->members.size());
  const auto a_pos = static_cast<size_t>(std::find(ga->members.begin(), ga->members.end(), graph::Member{"a.weight", 0}) -
                                         ga->members.begin());
  // Channel c = g*4 + j of a lands at position j*2 + g of b's input, and the channels with the
  // same j in both shuffle groups are one unit (so the re-split after a cut still lines up).
  REQUIRE(ga->size() == 4);
  for (const auto& unit : ga->indices()) {
    REQUIRE(unit[a_pos].size() == 2);
    const int64_t j = unit[a_pos][0];
    CHECK(unit[a_pos] == std::vector<int64_t>{j, j + 4});
    CHECK(unit[pos] == std::vector<int64_t>{j * 2, j * 2 + 1});
  }
  // Pruning through it keeps the forward working.
  prune::Pruner pruner(m, [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; },
                          prune::PrunerOptions().ratio(0.5));
  auto original = std::make_shared<ShuffleNet>();
  {
    torch::NoGradGuard no_grad;
    for (auto& kv : original->named_parameters()) kv.value().copy_(m->named_parameters()[kv.key()]);
  }
  const auto plan = pruner.step();
  CHECK(pruner.verification_pins().empty());
  CHECK(m->a->weight.size(0) == 4);
  CHECK(m->b->weight.size(1) == 4);
  // The unpruned model with the removed channels of `a` zeroed computes what the pruned one does,
  // which holds only if the shuffle sent every kept channel to the right input of `b`.
  std::vector<int64_t> keep;
  for (const auto& c : plan.cuts) {
    if (c.tensor == "a.weight" && c.dim == 0) keep = c.keep;
  }
  REQUIRE(keep.size() == 4);
  torch::NoGradGuard no_grad;
  auto mask = torch::zeros({8});
  for (auto k : keep) mask[k] = 1.0;
  original->a->weight.mul_(mask.view({8, 1, 1, 1}));
  original->a->bias.mul_(mask);
  CHECK(torch::allclose(m->forward(x), original->forward(x), 1e-5, 1e-6));
}

namespace {
// conv -> x * scale.view(1, C, 1, 1) -> conv, with the scale 1-D (a layer scale) or 2-D.
struct ViewedScale : torch::nn::Module {
  torch::nn::Conv2d a{nullptr}, b{nullptr};
  torch::Tensor scale;
  bool roll = false;
  explicit ViewedScale(std::vector<int64_t> scale_shape, bool rolled = false) : roll(rolled) {
    a = register_module("a", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3)));
    b = register_module("b", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 4, 3)));
    scale = register_parameter("scale", torch::ones(scale_shape));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto s = roll ? torch::roll(scale, {1}) : scale;  // rolled: channel c is scaled by scale[c - 1]
    return b(a(x) * s.reshape({1, -1, 1, 1}));
  }
};
}  // namespace

TEST_CASE("graph: a 1-D parameter viewed to broadcast along the channels is cut with them", "[graph]") {
  const auto x = torch::randn({1, 3, 8, 8});
  auto vec = std::make_shared<ViewedScale>(std::vector<int64_t>{8});
  const auto g = graph_of(*vec, [&] { return vec->forward(x); });
  const auto* grp = group_with(g, "a.weight", 0);
  REQUIRE(grp);
  CHECK(has(*grp, "scale", 0));
  CHECK(has(*grp, "b.weight", 1));
  CHECK_FALSE(grp->pinned);
  // A 2-D parameter flattened onto the channels is not a per-channel vector: pinned, with the op named.
  auto mat = std::make_shared<ViewedScale>(std::vector<int64_t>{2, 4});
  const auto g2 = graph_of(*mat, [&] { return mat->forward(x); });
  const auto* grp2 = group_with(g2, "a.weight", 0);
  REQUIRE(grp2);
  CHECK(grp2->pinned);
  CHECK_THAT(grp2->reason, Catch::Contains("Mul"));
  // A view that moves values (roll) is not a per-channel vector either: cutting it by index would be wrong.
  auto rolled = std::make_shared<ViewedScale>(std::vector<int64_t>{8}, true);
  const auto g3 = graph_of(*rolled, [&] { return rolled->forward(x); });
  const auto* grp3 = group_with(g3, "a.weight", 0);
  REQUIRE(grp3);
  CHECK(grp3->pinned);
  CHECK_FALSE(has(*grp3, "scale", 0));
}
