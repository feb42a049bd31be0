// Mixed precision: QuantOptions::keep_float keeps named units float through prepare, calibration,
// convert, the deploy file and load_int8.
#include "helpers.h"
#include "quant_helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

namespace {

bool has_quantiser(torch::nn::Module& layer) {
  for (const auto& [name, ext] : nn::extensions(layer)) {
    if (std::dynamic_pointer_cast<quant::FakeQuantizeImpl>(ext)) return true;
  }
  return false;
}

// Two convs that share one ReLU module.
struct SharedReluImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(3, 16, 3).padding(1)};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(16, 16, 3).padding(1)};
  torch::nn::ReLU relu;
  torch::nn::Linear fc{16, 4};
  SharedReluImpl() {
    register_module("conv1", conv1);
    register_module("conv2", conv2);
    register_module("relu", relu);
    register_module("fc", fc);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = nn::call(relu, nn::call(conv2, nn::call(relu, nn::call(conv1, x))));
    return nn::call(fc, y.mean({2, 3}));
  }
};
TORCH_MODULE(SharedRelu);

}  // namespace

TEST_CASE("quant: keep_float keeps the named units float in simulation, in int8 and in the deploy file", "[quant]") {
  const auto calib = torch::randn({32, 3, 16, 16}) * 0.5 + 0.2;
  const auto x = torch::randn({8, 3, 16, 16}) * 0.5 + 0.2;
  auto m = test::settled_resnet20(1);
  const auto modules = m->named_modules();
  // A unit is named by any of its layers: the stem by its conv, one by its batch norm, an add by itself.
  const auto options = quant::QuantOptions().observer(quant::Observer::min_max).keep_float({"conv1", "layer3.1.bn2", "layer2.0.add"});
  const auto report = quant::prepare(*m, test::run_on(m, calib.slice(0, 0, 2)), options);
  // Three named, and the adds that sum the stem's and layer3.1.conv2's float outputs (a named add's
  // sum does not make the next add float).
  CHECK(report.quantized.size() == 31 - 5);
  const auto text = report.explain();
  CHECK_THAT(text, Catch::Contains("conv1 + bn1 + relu: kept in float by keep_float") &&
                       Catch::Contains("layer3.1.conv2 + layer3.1.bn2: kept in float") &&
                       Catch::Contains("layer2.0.add + layer2.0.relu2: kept in float by keep_float") &&
                       Catch::Contains("layer1.0.add + layer1.0.relu2: kept in float: it adds the float output") &&
                       Catch::Contains("layer3.1.add + layer3.1.relu2: kept in float: it adds"));
  CHECK_THAT(text, !Catch::Contains("layer1.1.add + layer1.1.relu2: kept"));  // the next add is int8 again
  CHECK_THAT(text, !Catch::Contains("layer2.1.add + layer2.1.relu2: kept"));
  CHECK_FALSE(has_quantiser(*modules["conv1"]));
  CHECK_FALSE(has_quantiser(*modules["relu"]));
  CHECK_FALSE(has_quantiser(*modules["layer3.1.conv2"]));
  CHECK_FALSE(has_quantiser(*modules["layer2.0.add"]));
  const auto names = m->named_buffers();
  // Float outputs are rounded where int8 units read them: the stem's by the first block's conv, the
  // float add's by the next block's conv and add.
  CHECK(names.contains("layer1.0.conv1.input_fake_quant.scale"));
  CHECK_FALSE(names.contains("layer1.0.add.input1_fake_quant.scale"));
  CHECK(names.contains("layer1.1.conv1.input_fake_quant.scale"));
  CHECK(names.contains("layer1.1.add.input1_fake_quant.scale"));
  CHECK_FALSE(names.contains("layer1.2.conv1.input_fake_quant.scale"));  // reads an int8 add: no quantiser

  test::calibrate_on(m, calib);
  torch::Tensor simulated;
  {
    torch::NoGradGuard no_grad;
    simulated = m->forward(x);
  }
  const auto converted = quant::convert(*m, test::run_on(m, calib.slice(0, 0, 2)));
  CHECK(converted.quantized.size() == 26);
  const auto state = io::state_dict(*m);
  CHECK_FALSE(state.count("conv1.int8.weight"));
  CHECK_FALSE(state.count("layer3.1.conv2.int8.weight"));
  CHECK_FALSE(state.count("layer2.0.add.int8.qparams"));
  CHECK(state.count("layer3.1.conv1.int8.weight"));
  torch::NoGradGuard no_grad;
  const auto int8 = m->forward(x);
  const auto cos = torch::nn::functional::cosine_similarity(int8.flatten(), simulated.flatten(),
                                                            torch::nn::functional::CosineSimilarityFuncOptions().dim(0));
  CHECK(cos.item<double>() > 0.9999);

  // The deploy file holds the kept units' float tensors; load_int8 reads from it which units were kept.
  const auto deploy = quant::int8_state_dict(*m);
  CHECK(deploy.count("conv1.weight"));
  CHECK(deploy.count("bn1.running_var"));
  CHECK(deploy.count("layer3.1.bn2.weight"));
  CHECK_FALSE(deploy.count("layer3.1.conv1.weight"));
  auto loaded = test::settled_resnet20(2);
  const auto back = quant::load_int8(*loaded, test::run_on(loaded, x.slice(0, 0, 2)), deploy);
  CHECK(back.quantized.size() == 26);
  CHECK(torch::equal(loaded->forward(x), int8));
}

TEST_CASE("quant: keep_float's bad names and keeping every unit are refused; the model stays as it was", "[quant]") {
  const auto x = torch::randn({4, 3, 16, 16}) * 0.5 + 0.2;
  auto m = test::settled_resnet20(3);
  const auto before = test::snapshot(*m);
  const auto keys = io::state_dict(*m).size();
  const auto refused = [&](const quant::Names& keep, const std::string& says) {
    CHECK_THROWS_WITH(quant::prepare(*m, test::run_on(m, x), quant::QuantOptions().keep_float(keep)),
                      Catch::Contains(says) && Catch::Contains("Fix:"));
    CHECK_FALSE(quant::is_prepared(*m));
    CHECK(io::state_dict(*m).size() == keys);
    CHECK(test::same(test::snapshot(*m), before));
    for (const auto& item : m->named_modules()) CHECK(nn::extensions(*item.value()).empty());
  };
  refused({"conv1", "layer9.conv"}, "keep_float names 'layer9.conv', which is no layer of a unit");
  refused({"conv1", "layer9.conv"}, "31 units: conv1, layer1.0.conv1");

  auto probe = test::settled_resnet20(3);
  quant::Names all;
  for (const auto& line : quant::prepare(*probe, test::run_on(probe, x)).quantized) all.push_back(line.substr(0, line.find(' ')));
  REQUIRE(all.size() == 31);
  refused(all, "keeps all 31 units float, so nothing would be quantised");
}

TEST_CASE("quant: a ReLU module two units share is not fused into either; keeping one unit float keeps its ReLU",
          "[quant]") {
  torch::manual_seed(5);
  SharedRelu m;
  m->eval();
  const auto x = torch::randn({8, 3, 8, 8});
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = m->forward(x);
  }
  const graph::Forward pass = [&m, x] { return std::vector<torch::Tensor>{m->forward(x)}; };
  const auto report = quant::prepare(*m, pass, quant::QuantOptions().observer(quant::Observer::min_max).keep_float({"conv1"}));
  REQUIRE(report.quantized.size() == 2);
  CHECK(report.quantized[0] == "conv2");  // not "conv2 + relu": the ReLU runs on its own
  CHECK(report.skipped.at(0) == "conv1: kept in float by keep_float (mixed precision)");
  {
    torch::NoGradGuard no_grad;
    quant::calibration_mode(*m);
    m->forward(x);
  }
  quant::convert(*m, pass);
  torch::NoGradGuard no_grad;
  const auto int8 = m->forward(x);
  // Fused away into conv2, the ReLU would no longer act on conv1's float output.
  const auto cos = torch::nn::functional::cosine_similarity(int8.flatten(), reference.flatten(),
                                                            torch::nn::functional::CosineSimilarityFuncOptions().dim(0));
  CHECK(cos.item<double>() > 0.99);
}

TEST_CASE("quant: load_int8 rebuilds a mixed model whose named add also reads a kept conv", "[quant]") {
  const auto calib = torch::randn({16, 3, 16, 16}) * 0.5 + 0.2;
  auto m = test::settled_resnet20(6);
  const auto options = quant::QuantOptions().observer(quant::Observer::min_max).keep_float({"layer1.0.conv2", "layer1.0.add"});
  CHECK(quant::prepare(*m, test::run_on(m, calib.slice(0, 0, 2)), options).quantized.size() == 29);
  test::calibrate_on(m, calib);
  quant::convert(*m, test::run_on(m, calib.slice(0, 0, 2)));
  torch::NoGradGuard no_grad;
  const auto int8 = m->forward(calib);
  auto loaded = test::settled_resnet20(7);
  CHECK(quant::load_int8(*loaded, test::run_on(loaded, calib.slice(0, 0, 2)), quant::int8_state_dict(*m)).quantized.size() == 29);
  CHECK(torch::equal(loaded->forward(calib), int8));
}
