#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

TEST_CASE("count_ops matches the hook-based conv+linear MACs of torchvision models at 224", "[count_ops]") {
  const std::vector<std::tuple<std::string, int64_t, int64_t>> expected = {
      {"resnet50", 4089184256, 25557032},
      {"resnet18", 1814073344, 11689512},
      {"mobilenet_v2", 300774272, 3504872},
  };
  for (const auto& [name, macs, params] : expected) {
    INFO(name);
    auto m = models::create(name);
    const auto c = measure::count_ops(m, torch::randn({1, 3, 224, 224}));
    CHECK(c.macs == macs);
    CHECK(c.params == params);
    CHECK(c.matmul_macs == 0);
    CHECK(c.norm_elements > 0);
    CHECK(c.elementwise_elements > 0);
    CHECK(c.unknown_ops.empty());
  }
}

namespace {
struct Tiny : torch::nn::Module {
  torch::nn::Conv2d conv{nullptr}, grouped{nullptr};
  torch::nn::ConvTranspose2d up{nullptr};
  torch::nn::Linear fc{nullptr};
  Tiny() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    grouped = register_module("grouped", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1).groups(4)));
    up = register_module("up", torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(8, 4, 2).stride(2)));
    fc = register_module("fc", torch::nn::Linear(4 * 16 * 16, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(conv(x));
    x = grouped(x);
    x = up(x);
    auto flat = x.flatten(1);
    // An activation-by-activation product, as attention's QK^T would be.
    auto gram = torch::bmm(x.flatten(2), x.flatten(2).transpose(1, 2));
    return fc(flat) + gram.sum();
  }
};
}  // namespace

TEST_CASE("count_ops: hand-worked conv, grouped conv, transposed conv, linear and matmul", "[count_ops]") {
  auto m = std::make_shared<Tiny>();
  const auto c = measure::count_ops(m, torch::randn({1, 3, 8, 8}));
  const int64_t conv = 8 * 8 * 8 * (3 * 9);      // out elements x (in x kernel)
  const int64_t grouped = 8 * 8 * 8 * (2 * 9);   // in/groups = 2
  const int64_t up = (8 * 8 * 8) * (4 * 4);      // input elements x (out x kernel)
  const int64_t fc = 1024 * 10;
  CHECK(c.macs == conv + grouped + up + fc);
  CHECK(c.matmul_macs == 4 * 4 * 256);           // [4,256] x [256,4]
  CHECK(c.params == 3 * 8 * 9 + 8 + 8 * 2 * 9 + 8 + 8 * 4 * 4 + 4 + 1024 * 10 + 10);
  REQUIRE(c.layers.size() == 5);
  std::map<std::string, int64_t> by_name;
  for (const auto& l : c.layers) by_name[l.name] = l.macs;
  CHECK(by_name.at("conv") == conv);
  CHECK(by_name.at("grouped") == grouped);
  CHECK(by_name.at("up") == up);
  CHECK(by_name.at("fc") == fc);
  // Batch scales every count linearly.
  CHECK(measure::count_ops(m, torch::randn({3, 3, 8, 8})).macs == 3 * c.macs);
}

TEST_CASE("count_ops: example inputs of the wrong shape give a clear error and change nothing", "[count_ops]") {
  auto m = models::resnet18(models::ModelOptions().num_classes(10));
  m->train();
  m->fc->bias.set_requires_grad(false);
  const auto before = test::snapshot(*m);
  const std::string msg = test::message_of([&] { measure::count_ops(m, torch::randn({1, 1, 32, 32})); });
  CHECK_THAT(msg, Catch::Contains("forward failed on the example inputs"));
  CHECK_THAT(msg, Catch::Contains("[1, 1, 32, 32]"));
  CHECK_THAT(msg, Catch::Contains("Fix:"));
  CHECK_THROWS_AS(measure::count_ops(m, torch::randn({1, 1, 32, 32})), c10::ValueError);
  CHECK(m->is_training());
  CHECK(m->stages[0]->is_training());
  CHECK_FALSE(m->fc->bias.requires_grad());
  CHECK(test::same(before, test::snapshot(*m)));
}

TEST_CASE("count_ops leaves BN statistics, train flags and requires_grad as they were", "[count_ops]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  m->train();
  m->conv1->weight.set_requires_grad(false);
  const auto before = test::snapshot(*m);
  const auto c = measure::count_ops(m, torch::randn({4, 3, 32, 32}));
  CHECK(c.params > 0);
  CHECK(test::same(before, test::snapshot(*m)));
  CHECK(m->is_training());
  CHECK_FALSE(m->conv1->weight.requires_grad());
  CHECK(m->fc->weight.requires_grad());
  CHECK_FALSE(m->fc->weight.grad().defined());
}

TEST_CASE("trace: a forward that uses no parameter is an error, not a crash", "[count_ops]") {
  auto msg = test::message_of([] {
    graph::Trace::capture([] { return std::vector<torch::Tensor>{torch::ones({2})}; }, {});
  });
  CHECK_THAT(msg, Catch::Contains("no output that depends on a parameter"));
}
