// The int8 model's output (not rounded), and its deploy file (quant::int8_state_dict) read back into a
// model by quant::load_int8.
#include "helpers.h"
#include "quant_helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

TEST_CASE("quant: load_int8 rebuilds the int8 model from its deploy file, bit for bit", "[quant]") {
  const auto calib = torch::randn({32, 3, 16, 16}) * 0.5 + 0.2;
  const auto x = torch::randn({8, 3, 16, 16}) * 0.5 + 0.2;
  auto saved = test::settled_resnet20(1);
  quant::prepare(*saved, test::run_on(saved, calib.slice(0, 0, 2)), quant::QuantOptions().observer(quant::Observer::min_max));
  {
    torch::NoGradGuard no_grad;
    quant::calibration_mode(*saved);
    saved->forward(calib);
  }
  quant::convert(*saved, test::run_on(saved, calib.slice(0, 0, 2)));
  test::TempDir dir("deploy");
  const auto path = dir.file("model_int8.pt");
  io::write_state_dict(quant::int8_state_dict(*saved), path);
  torch::NoGradGuard no_grad;
  const auto expected = saved->forward(x);

  auto loaded = test::settled_resnet20(2);  // other float weights: the file's int8 ones must replace them
  CHECK_FALSE(torch::equal(loaded->forward(x), expected));
  const auto report = quant::load_int8(*loaded, test::run_on(loaded, x.slice(0, 0, 2)), io::read_state_dict(path), path);
  CHECK(report.quantized.size() == 31);
  CHECK(quant::is_converted(*loaded));
  CHECK(torch::equal(loaded->forward(x), expected));

  SECTION("a file of another model is refused, naming a tensor, and the model stays float") {
    auto other = test::settled_resnet20(3, /*classes=*/100);
    const auto before = test::snapshot(*other);
    const auto keys = io::state_dict(*other).size();
    const auto float_out = other->forward(x);
    CHECK_THROWS_WITH(quant::load_int8(*other, test::run_on(other, x.slice(0, 0, 2)), io::read_state_dict(path), path),
                      Catch::Contains(path) && Catch::Contains("fc.int8.") && Catch::Contains("Fix:"));
    CHECK_FALSE(quant::is_converted(*other));
    CHECK_FALSE(quant::is_prepared(*other));
    CHECK(io::state_dict(*other).size() == keys);
    CHECK(test::same(test::snapshot(*other), before));
    CHECK(torch::equal(other->forward(x), float_out));
  }
  SECTION("a converted model is refused") {
    CHECK_THROWS_WITH(quant::load_int8(*loaded, test::run_on(loaded, x.slice(0, 0, 2)), io::read_state_dict(path), path),
                      Catch::Contains("already has quantisers or int8 kernels"));
  }
}

TEST_CASE("quant: the model's output (logits) is not rounded to a grid, in simulation and in int8", "[quant]") {
  const auto calib = torch::randn({64, 3, 16, 16}) * 0.5 + 0.2;
  auto m = test::settled_resnet20(4);
  quant::prepare(*m, test::run_on(m, calib.slice(0, 0, 2)), quant::QuantOptions().observer(quant::Observer::min_max));
  const auto names = m->named_buffers();
  CHECK(names.contains("layer3.2.relu1.output_fake_quant.scale"));       // read by conv2: rounded
  CHECK_FALSE(names.contains("layer3.2.relu2.output_fake_quant.scale"));  // read by a functional pooling
  CHECK_FALSE(names.contains("fc.output_fake_quant.scale"));        // read by no layer: the logits
  test::calibrate_on(m, calib);
  torch::NoGradGuard no_grad;
  const auto simulated = m->forward(calib);
  quant::convert(*m, test::run_on(m, calib.slice(0, 0, 2)));
  const auto int8 = m->forward(calib);
  // 640 logits: on a 256-step grid at most 256 distinct values.
  CHECK(std::get<0>(at::_unique(int8.flatten())).numel() > 256);
  const auto cos = torch::nn::functional::cosine_similarity(int8.flatten(), simulated.flatten(),
                                                            torch::nn::functional::CosineSimilarityFuncOptions().dim(0));
  CHECK(cos.item<double>() > 0.9999);
}

TEST_CASE("quant: a BERT's linears all run int8 kernels; outputs only code reads get a grid, the logits none", "[quant]") {
  torch::manual_seed(5);
  auto m = models::create("bert_mini", models::ModelOptions().num_classes(5).vocab_size(100));
  const nn::Inputs in{{"input_ids", torch::randint(100, {4, 12})}, {"attention_mask", torch::ones({4, 12}, torch::kLong)}};
  const auto run = [&] { return std::vector<torch::Tensor>{m->forward_inputs(in)}; };
  quant::prepare(*m, run, quant::QuantOptions().observer(quant::Observer::min_max));
  const auto names = m->named_buffers();
  const std::string layer = "bert.encoder.layer.0.";
  CHECK(names.contains(layer + "attention.self.query.output_fake_quant.scale"));  // read by attention's reshapes
  CHECK(names.contains(layer + "intermediate.dense.output_fake_quant.scale"));    // read by a functional GELU
  CHECK(names.contains("bert.pooler.dense.output_fake_quant.scale"));             // read by a functional tanh
  CHECK_FALSE(names.contains("classifier.output_fake_quant.scale"));              // the logits
  torch::NoGradGuard no_grad;
  quant::calibration_mode(*m);
  run();
  m->eval();
  const auto simulated = m->forward_inputs(in);
  quant::convert(*m, run);
  quant::repack(*m);
  const auto before = quant::packs_made();
  const auto int8 = m->forward_inputs(in);
  // 4 layers x (query, key, value, attention output, intermediate, output) and the pooler; the
  // classifier computes in float from its int8 input and weight (no grid, so no pack).
  CHECK(quant::packs_made() - before == 4 * 6 + 1);
  CHECK(torch::allclose(int8, simulated, 0.05, 0.05));
  // The deploy file says so, and load_int8 rebuilds the same model from it.
  test::TempDir dir("bert_deploy");
  const auto path = dir.file("bert_int8.pt");
  io::write_state_dict(quant::int8_state_dict(*m), path);
  const auto file = io::read_state_dict(path);
  const auto query = file.at(layer + "attention.self.query.int8.qparams");
  CHECK(query[0].item<double>() > 0);   // a grid of its own
  CHECK(query[2].item<double>() == 1);  // dequantised for the code that reads it
  CHECK(file.at("classifier.int8.qparams")[0].item<double>() == 0);  // the logits: no grid
  torch::manual_seed(6);
  auto loaded = models::create("bert_mini", models::ModelOptions().num_classes(5).vocab_size(100));
  quant::load_int8(*loaded, [&] { return std::vector<torch::Tensor>{loaded->forward_inputs(in)}; }, file, path);
  loaded->eval();
  CHECK(torch::equal(loaded->forward_inputs(in), int8));
}

namespace {
struct ScaledLogits : torch::nn::Module {
  torch::nn::Linear hidden{register_module("hidden", torch::nn::Linear(8, 8))};
  torch::nn::Linear head{register_module("head", torch::nn::Linear(8, 3))};
  // Layers called through nn::call, as the zoo's are, so forward extensions run; code after the last.
  torch::Tensor forward(const torch::Tensor& x) { return nn::call(head, nn::call(hidden, x)) / 2; }
};
}  // namespace

TEST_CASE("quant: logits that code changes before returning them are still not rounded", "[quant]") {
  auto net = std::make_shared<ScaledLogits>();
  const auto x = torch::randn({4, 8});
  quant::prepare(*net, [&] { return std::vector<torch::Tensor>{net->forward(x)}; }, quant::QuantOptions());
  const auto names = net->named_buffers();
  CHECK(names.contains("hidden.output_fake_quant.scale"));  // read by the head
  CHECK_FALSE(names.contains("head.output_fake_quant.scale"));  // no layer runs after it
}
