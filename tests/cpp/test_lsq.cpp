// LSQ's learnable scales, and the quantisers' integer-range check on loaded state.
#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

namespace {

graph::Forward example(models::ResNet& m, const torch::Tensor& x) {
  return [&m, x] { return std::vector<torch::Tensor>{m->forward(x)}; };
}

std::vector<torch::Tensor> copies(const std::vector<torch::Tensor>& ts) {
  std::vector<torch::Tensor> out;
  for (const auto& t : ts) out.push_back(t.detach().clone());
  return out;
}

bool all_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i].detach(), b[i].detach())) return false;
  }
  return a.size() == b.size();
}

}  // namespace

TEST_CASE("quant: LSQ scales follow the observers, then learn; evaluation keeps them; convert uses them", "[quant]") {
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  const auto x = torch::randn({16, 3, 16, 16}) * 0.5 + 0.2;
  const auto y = torch::randint(0, 10, {16});
  const size_t params_before = m->parameters().size();
  quant::prepare(*m, example(m, x.slice(0, 0, 2)), quant::QuantOptions().learnable_scales(true));
  const auto scales = quant::learnable_scales(*m);
  REQUIRE(!scales.empty());
  CHECK(m->parameters().size() == params_before + scales.size());  // the optimizer can see them
  m->train();
  m->forward(x);  // observers on: they set the scales from the ranges, with no gradient to learn from
  const auto observed = copies(scales);
  CHECK(observed.front().ne(1.0).all().item<bool>());
  quant::enable_observers(*m, false);
  torch::optim::SGD opt(scales, torch::optim::SGDOptions(1e-3));
  for (int step = 0; step < 3; ++step) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(m->forward(x), y).backward();
    REQUIRE(scales.front().grad().defined());
    opt.step();
  }
  CHECK_FALSE(all_equal(scales, observed));
  const auto learned = copies(scales);
  {
    torch::NoGradGuard no_grad;
    m->eval();
    m->forward(x);
  }
  CHECK(all_equal(scales, learned));  // ATen's fused kernel would have reset them from the ranges
  const auto conv_out = m->named_parameters()["layer3.2.relu1.output_fake_quant.scale"].item<double>();
  quant::convert(*m, example(m, x.slice(0, 0, 2)));
  const auto sd = quant::int8_state_dict(*m);
  const auto it = std::find_if(sd.begin(), sd.end(), [](const auto& kv) { return kv.first == "layer3.2.conv1.int8.qparams"; });
  REQUIRE(it != sd.end());
  CHECK(it->second[0].item<double>() == Approx(conv_out).epsilon(1e-7));
}

TEST_CASE("quant: a quantiser refuses state saved with other bits, naming both ranges", "[quant]") {
  quant::FakeQuantize four(quant::FakeQuantizeOptions(quant::Role::weight, 3).bits(4));
  quant::FakeQuantize eight(quant::FakeQuantizeOptions(quant::Role::weight, 3));
  four->apply(torch::randn({3, 2, 3, 3}));
  {
    torch::NoGradGuard no_grad;
    const auto saved = four->named_buffers();
    for (auto& b : eight->named_buffers()) b.value().copy_(saved[b.key()]);
  }
  CHECK_THROWS_WITH(eight->apply(torch::randn({3, 2, 3, 3})),
                    Catch::Contains("[-8, 7] (4 bits) but it was made for [-128, 127] (8 bits)") &&
                        Catch::Contains("Fix: prepare the model with the options the state was saved with"));
  CHECK_THROWS_WITH(eight->calculate_qparams(), Catch::Contains("other quantization options"));
}
