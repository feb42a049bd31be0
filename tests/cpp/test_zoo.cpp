#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

namespace {
int64_t count_params(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}
}  // namespace

TEST_CASE("zoo models have torchvision's parameter counts", "[zoo]") {
  // Published torchvision 0.14 counts.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"resnet18", 11689512},         {"resnet34", 21797672},  {"resnet50", 25557032},
      {"resnet101", 44549160},        {"resnet152", 60192808}, {"resnext50_32x4d", 25028904},
      {"wide_resnet50_2", 68883240},  {"vgg11_bn", 132868840}, {"vgg16_bn", 138365992},
      {"mobilenet_v2", 3504872},
  };
  for (const auto& [name, params] : expected) {
    INFO(name);
    CHECK(count_params(*models::create(name)) == params);
  }
}

TEST_CASE("zoo models run forward and keep output shapes", "[zoo]") {
  for (const std::string name : {"resnet18", "resnext50_32x4d", "mobilenet_v2", "vgg11_bn"}) {
    INFO(name);
    auto m = models::create(name, models::ModelOptions().num_classes(7));
    m->eval();
    torch::NoGradGuard no_grad;
    CHECK(m->forward(torch::randn({2, 3, 64, 64})).sizes() == torch::IntArrayRef({2, 7}));
  }
}

TEST_CASE("CIFAR ResNets: 3x3 stem, 16/32/64 stages, projection shortcuts, in_channels", "[zoo]") {
  for (int depth : {20, 32, 56, 110}) {
    auto m = models::cifar_resnet(depth, models::ModelOptions().num_classes(10).in_channels(1));
    const int64_t n = (depth - 2) / 6;
    REQUIRE(m->stages.size() == 3);
    CHECK(m->stages[0]->size() == static_cast<size_t>(n));
    CHECK(m->conv1->options.kernel_size()->at(0) == 3);
    CHECK(m->conv1->options.in_channels() == 1);
    CHECK(m->fc->options.in_features() == 64);
    // Only the first block of stages 2 and 3 changes shape, so only they have a projection.
    auto block = [&](size_t s, size_t b) { return m->stages[s]->ptr<models::BasicBlockImpl>(b); };
    CHECK_FALSE(block(0, 0)->downsample);
    CHECK(block(1, 0)->downsample);
    CHECK(block(2, 0)->downsample);
    CHECK_FALSE(block(1, 1)->downsample);
    m->eval();
    torch::NoGradGuard no_grad;
    CHECK(m->forward(torch::randn({3, 1, 28, 28})).sizes() == torch::IntArrayRef({3, 10}));
  }
  CHECK_THROWS_WITH(models::cifar_resnet(21), Catch::Contains("6n+2"));
}

TEST_CASE("registry: unknown names list the known ones", "[zoo]") {
  const auto names = models::names();
  CHECK(std::find(names.begin(), names.end(), "resnet50") != names.end());
  CHECK(std::find(names.begin(), names.end(), "cifar_resnet20") != names.end());
  const std::string msg = test::message_of([] { models::create("resnet51"); });
  CHECK_THAT(msg, Catch::Contains("unknown model \"resnet51\""));
  CHECK_THAT(msg, Catch::Contains("resnet50") && Catch::Contains("mobilenet_v2") && Catch::Contains("vgg16_bn"));
  CHECK_THROWS_AS(models::create("resnet51"), c10::ValueError);
  CHECK_THAT(test::message_of([] { models::create("resnet18", models::ModelOptions().num_classes(0)); }),
             Catch::Contains("num_classes must be positive"));
}

TEST_CASE("channels_last: the zoo gives the same output in either memory format", "[zoo]") {
  auto m = models::resnet18(models::ModelOptions().num_classes(10));
  m->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 3, 64, 64});
  auto y = m->forward(x);
  nn::to_memory_format(*m, torch::MemoryFormat::ChannelsLast);
  CHECK(m->conv1->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
  auto y_cl = m->forward(x.contiguous(torch::MemoryFormat::ChannelsLast));
  CHECK((y - y_cl).abs().max().item<double>() < 1e-4);
}
