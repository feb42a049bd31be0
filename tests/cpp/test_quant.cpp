#include "helpers.h"
#include "libprune/libprune.h"


using namespace libprune;

namespace {

// x / scale + zero_point is an integer in [qmin, qmax] everywhere.
bool on_grid(const torch::Tensor& y, const torch::Tensor& scale, const torch::Tensor& zp, int64_t qmin, int64_t qmax,
             bool per_channel) {
  auto s = scale, z = zp.to(torch::kFloat);
  if (per_channel) {
    std::vector<int64_t> shape(static_cast<size_t>(y.dim()), 1);
    shape[0] = -1;
    s = s.reshape(shape);
    z = z.reshape(shape);
  }
  const auto q = y / s + z;
  return (q - q.round()).abs().max().item<float>() < 1e-3 && q.min().item<float>() >= qmin - 1e-3 &&
         q.max().item<float>() <= qmax + 1e-3;
}

models::ResNet tiny_resnet() {
  torch::manual_seed(0);
  return models::cifar_resnet(20, models::ModelOptions().num_classes(10));
}

graph::Forward example(models::ResNet& m, const torch::Tensor& x) {
  return [&m, x] { return std::vector<torch::Tensor>{m->forward(x)}; };
}

// Runs some batches in train mode so the batch norms hold statistics unlike their initial ones.
void settle_batchnorm(models::ResNet& m) {
  torch::NoGradGuard no_grad;
  m->train();
  for (int i = 0; i < 5; ++i) m->forward(torch::randn({16, 3, 16, 16}) * 0.5 + 0.2);
  m->eval();
}

double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::nn::functional::cosine_similarity(a.flatten(), b.flatten(), torch::nn::functional::CosineSimilarityFuncOptions().dim(0)).item<double>();
}

}  // namespace

TEST_CASE("quant: an activation quantiser tracks a moving range and rounds to its grid", "[quant]") {
  quant::FakeQuantize fq(quant::FakeQuantizeOptions(quant::Role::activation, 1));
  torch::manual_seed(1);
  const auto x1 = torch::randn({4, 8, 5, 5});
  const auto y1 = fq->apply(x1);
  CHECK(fq->min_val.item<float>() == x1.min().item<float>());
  CHECK(fq->max_val.item<float>() == x1.max().item<float>());
  const float range = x1.max().item<float>() - x1.min().item<float>();
  CHECK(fq->scale.item<float>() == Approx(range / 255).epsilon(1e-5));
  CHECK(on_grid(y1, fq->scale, fq->zero_point, 0, 255, false));
  CHECK((y1 - x1).abs().max().item<float>() <= fq->scale.item<float>() / 2 + 1e-6);
  // The next batch moves the range by 1% of the difference.
  const auto x2 = torch::randn({4, 8, 5, 5}) * 3;
  fq->apply(x2);
  CHECK(fq->min_val.item<float>() ==
        Approx(x1.min().item<float>() + 0.01 * (x2.min().item<float>() - x1.min().item<float>())).epsilon(1e-6));
  // In eval mode the observer does not watch (evaluating never moves a range).
  fq->eval();
  const auto watched = fq->min_val.clone();
  fq->apply(x2 * 10);
  CHECK(torch::equal(fq->min_val, watched));
  fq->train();
  // Frozen observer: the range stays.
  fq->enable_observer(false);
  const auto frozen = fq->scale.clone();
  fq->apply(x2 * 10);
  CHECK(torch::equal(fq->scale, frozen));
  // Rounding off: values pass unchanged.
  fq->enable_fake_quant(false);
  CHECK(torch::equal(fq->apply(x1), x1));
}

TEST_CASE("quant: a weight quantiser is per channel and symmetric; min_max keeps the widest range; bits set the grid",
          "[quant]") {
  torch::manual_seed(2);
  const auto w = torch::randn({6, 3, 3, 3});
  quant::FakeQuantize fq(quant::FakeQuantizeOptions(quant::Role::weight, 6).observer(quant::Observer::min_max));
  const auto y = fq->apply(w);
  CHECK(torch::all(fq->zero_point == 0).item<bool>());
  // ATen's symmetric choice (torch.ao's fused quantiser): the scale that fits both ends of [-128, 127].
  const auto flat = w.reshape({6, -1});
  const auto expected = torch::maximum(-std::get<0>(flat.min(1)) / 128, std::get<0>(flat.max(1)) / 127);
  CHECK(torch::allclose(fq->scale, expected, 1e-6, 0));
  CHECK(on_grid(y, fq->scale, fq->zero_point, -128, 127, true));
  fq->apply(w * 0.1);  // a narrower range does not narrow a min_max observer
  CHECK(torch::allclose(fq->scale, expected, 1e-6, 0));

  quant::FakeQuantize four(quant::FakeQuantizeOptions(quant::Role::activation, 1).bits(4));
  const auto y4 = four->apply(w);
  CHECK(four->quant_max() == 15);
  CHECK(on_grid(y4, four->scale, four->zero_point, 0, 15, false));
  CHECK(std::get<0>(at::_unique(y4)).numel() <= 16);

  CHECK_THROWS_WITH(quant::FakeQuantize(quant::FakeQuantizeOptions(quant::Role::activation, 1).bits(9)),
                    Catch::Contains("bits must be 2 to 8, got 9"));
  CHECK_THROWS_WITH(quant::FakeQuantize(quant::FakeQuantizeOptions(quant::Role::weight, 1).bits(1)),
                    Catch::Contains("bits must be 2 to 8, got 1"));
}

TEST_CASE("quant: prepare places quantisers from the model's calls: fused units, inputs only where needed", "[quant]") {
  auto m = tiny_resnet();
  settle_batchnorm(m);
  const auto x = torch::randn({8, 3, 16, 16});
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    reference = m->forward(x);
  }
  const auto params_before = m->parameters().size();
  const auto report = quant::prepare(*m, example(m, x));
  // Stem, 9 blocks x (conv1+bn1+relu1, conv2+bn2, add+relu2), 2 downsample convs + bn, fc.
  CHECK(report.quantized.size() == 1 + 27 + 2 + 1);
  const auto text = report.explain();
  CHECK_THAT(text, Catch::Contains("conv1 + bn1 + relu\n") && Catch::Contains("layer1.0.conv2 + layer1.0.bn2\n") &&
                       Catch::Contains("layer1.0.add + layer1.0.relu2") && Catch::Contains("layer2.0.downsample.0 + layer2.0.downsample.1"));
  CHECK(report.skipped.empty());
  const auto state = io::state_dict(*m);
  CHECK(state.count("conv1.weight_fake_quant.scale"));
  CHECK(state.at("layer2.0.conv1.weight_fake_quant.scale").size(0) == m->named_parameters()["layer2.0.conv1.weight"].size(0));
  CHECK(state.count("layer1.0.relu2.output_fake_quant.scale"));
  CHECK(state.count("conv1.input_fake_quant.scale"));   // the model's input
  CHECK(state.count("fc.input_fake_quant.scale"));      // after the functional average pool
  CHECK_FALSE(state.count("layer1.0.conv1.input_fake_quant.scale"));  // reads relu's int8 output
  CHECK_FALSE(state.count("layer1.0.add.input_fake_quant.scale"));
  CHECK(m->parameters().size() == params_before);  // observers and scales are buffers
  CHECK(quant::is_prepared(*m));

  torch::NoGradGuard no_grad;
  quant::calibration_mode(*m);
  m->forward(x);  // observe once
  m->eval();
  quant::enable_observers(*m, false);
  quant::enable_fake_quant(*m, false);
  // Without rounding, the simulated fold computes what the float model computes.
  CHECK(torch::allclose(m->forward(x), reference, 1e-4, 1e-4));
  quant::enable_fake_quant(*m, true);
  const auto simulated = m->forward(x);
  CHECK_FALSE(torch::allclose(simulated, reference, 1e-5, 1e-5));
  CHECK(cosine(simulated, reference) > 0.99);

  CHECK_THROWS_WITH(quant::prepare(*m, example(m, x)), Catch::Contains("already has fake quantisers"));
}

TEST_CASE("quant: calibration then convert gives int8 kernels that compute what the fake-quantised model does",
          "[quant]") {
  auto m = tiny_resnet();
  settle_batchnorm(m);
  const auto calib = torch::randn({64, 3, 16, 16}) * 0.5 + 0.2;
  const auto held_out = torch::randn({64, 3, 16, 16}) * 0.5 + 0.2;
  quant::prepare(*m, example(m, calib.slice(0, 0, 2)), quant::QuantOptions().observer(quant::Observer::min_max));
  torch::NoGradGuard no_grad;
  quant::calibration_mode(*m);
  for (int i = 0; i < 4; ++i) m->forward(calib.slice(0, i * 16, (i + 1) * 16));
  m->eval();
  quant::enable_fake_quant(*m, true);
  quant::enable_observers(*m, false);
  const auto simulated = m->forward(held_out);

  const auto report = quant::convert(*m, example(m, calib.slice(0, 0, 2)));
  CHECK(report.quantized.size() == 31);
  CHECK(quant::is_converted(*m));
  CHECK_FALSE(quant::is_prepared(*m));
  const auto state = io::state_dict(*m);
  REQUIRE(state.count("layer1.0.conv1.int8.weight"));
  CHECK(state.at("layer1.0.conv1.int8.weight").scalar_type() == torch::kChar);
  CHECK_FALSE(state.count("layer1.0.conv1.weight_fake_quant.scale"));
  const auto int8 = m->forward(held_out);
  CHECK(int8.scalar_type() == torch::kFloat);
  CHECK_FALSE(int8.is_quantized());
  const double agree = (int8.argmax(1) == simulated.argmax(1)).to(torch::kFloat).mean().item<double>();
  INFO("cosine " << cosine(int8, simulated) << ", argmax agreement " << agree);
  CHECK(cosine(int8, simulated) > 0.999);
  CHECK(agree >= 0.95);
  // The int8 state is much smaller than the float one.
  int64_t float_bytes = 0;
  for (const auto& p : m->parameters()) float_bytes += p.numel() * 4;
  CHECK(quant::int8_state_bytes(*m) < float_bytes / 3);
  // Fresh packs give the same result.
  quant::repack(*m);
  CHECK(torch::equal(m->forward(held_out), int8));
}

TEST_CASE("quant: QAT trains through the quantisers; a zeroed batch-norm scale stays finite; pruning cuts their state",
          "[quant]") {
  auto m = tiny_resnet();
  const auto x = torch::randn({8, 3, 16, 16});
  const auto y = torch::randint(0, 10, {8});
  quant::prepare(*m, example(m, x));
  m->bn1->weight.data()[0] = 0;  // as BN-scale pruning or an L1 penalty leave it
  m->named_parameters()["layer1.0.bn1.weight"].data().zero_();
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  m->train();
  for (int i = 0; i < 2; ++i) {
    opt.zero_grad();
    const auto loss = torch::nn::functional::cross_entropy(m->forward(x), y);
    REQUIRE(std::isfinite(loss.item<double>()));
    loss.backward();
    opt.step();
  }
  CHECK(m->conv1->weight.grad().abs().sum().item<double>() > 0);
  CHECK(torch::isfinite(m->conv1->weight).all().item<bool>());
  CHECK(m->named_parameters()["layer2.0.bn2.weight"].grad().abs().sum().item<double>() > 0);

  // Pruning a prepared model: the per-channel weight state is cut with the channels.
  const auto scale = m->named_buffers()["layer1.0.conv1.weight_fake_quant.scale"];
  const auto channels = scale.size(0);
  prune::Pruner pruner(m.ptr(), example(m, x.slice(0, 0, 1)), prune::PrunerOptions().ratio(0.5).ignored_layers({"fc"}));
  const auto plan = pruner.step(&opt);
  std::string pins;
  for (const auto& pin : pruner.verification_pins()) pins += pin + "\n";
  INFO(plan.cuts.size() << " cuts; pinned:\n" << pins);
  const auto after = m->named_buffers()["layer1.0.conv1.weight_fake_quant.scale"];
  CHECK(after.size(0) < channels);
  CHECK(after.size(0) == m->named_parameters()["layer1.0.conv1.weight"].size(0));
  m->train();
  opt.zero_grad();
  torch::nn::functional::cross_entropy(m->forward(x), y).backward();
  opt.step();

  // And it converts, finite, zeroed scales included.
  m->eval();
  torch::NoGradGuard no_grad;
  quant::convert(*m, example(m, x.slice(0, 0, 2)));
  CHECK(torch::isfinite(m->forward(x)).all().item<bool>());
}

TEST_CASE("quant: bad input gives a clear error and leaves the model as it was", "[quant]") {
  auto m = tiny_resnet();
  const auto x = torch::randn({2, 3, 16, 16});
  CHECK_THROWS_WITH(quant::convert(*m, example(m, x)), Catch::Contains("no fake quantisers"));
  CHECK_THROWS_WITH(quant::prepare(*m, example(m, x), quant::QuantOptions().bits(12)), Catch::Contains("bits must be in [2, 8]"));
  CHECK_FALSE(quant::is_prepared(*m));

  quant::prepare(*m, example(m, x));
  const auto before = io::state_dict(*m);
  // Nothing observed yet.
  CHECK_THROWS_WITH(quant::convert(*m, example(m, x)), Catch::Contains("has not observed any finite value"));
  CHECK(quant::is_prepared(*m));
  CHECK_FALSE(quant::is_converted(*m));
  CHECK(io::state_dict(*m).size() == before.size());
  CHECK(torch::equal(m->named_buffers()["conv1.input_fake_quant.min_val"], before.at("conv1.input_fake_quant.min_val")));
  {
    torch::NoGradGuard no_grad;
    quant::calibration_mode(*m);
    m->forward(x);
  }
  CHECK_THROWS_WITH(quant::convert(*m, example(m, x), quant::ConvertOptions().engine("tpu")), Catch::Contains("unknown engine \"tpu\""));
  bool fbgemm = false;
  for (const auto e : at::globalContext().supportedQEngines()) fbgemm = fbgemm || e == at::QEngine::FBGEMM;
  if (!fbgemm) {
    CHECK_THROWS_WITH(quant::convert(*m, example(m, x), quant::ConvertOptions().engine("fbgemm")),
                      Catch::Contains("not built into this LibTorch"));
  }
  CHECK(quant::is_prepared(*m));

  // Four bits simulate but do not convert.
  auto m4 = tiny_resnet();
  quant::prepare(*m4, example(m4, x), quant::QuantOptions().bits(4));
  {
    torch::NoGradGuard no_grad;
    quant::calibration_mode(*m4);
    m4->forward(x);
  }
  CHECK_THROWS_WITH(quant::convert(*m4, example(m4, x)), Catch::Contains("only 8 bits convert"));
  CHECK(quant::is_prepared(*m4));

  // QAT state into a float model: the error says what differs, and nothing loads.
  auto plain = tiny_resnet();
  const auto weight = plain->conv1->weight.clone();
  CHECK_THROWS_WITH(io::load_state_dict(*plain, io::state_dict(*m4)),
                    Catch::Contains("quantization state") && Catch::Contains("Nothing was loaded"));
  CHECK(torch::equal(plain->conv1->weight, weight));
}

TEST_CASE("quant: without the simulated fold, convert rounds the folded weight to the integers QAT trained", "[quant]") {
  torch::manual_seed(3);
  auto m = tiny_resnet();
  settle_batchnorm(m);
  {
    // One negative batch-norm scale: its channel's integers flip sign.
    torch::NoGradGuard no_grad;
    m->named_parameters()["layer1.0.bn1.weight"][2].fill_(-0.7);
    m->named_parameters()["fc.weight"].normal_(0, 0.1);  // the zoo starts it at zero
  }
  auto folded = tiny_resnet();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : folded->named_parameters()) p.value().copy_(m->named_parameters()[p.key()]);
    for (auto& b : folded->named_buffers()) b.value().copy_(m->named_buffers()[b.key()]);
  }
  const auto x = torch::randn({16, 3, 16, 16}) * 0.5 + 0.2;
  quant::prepare(*m, example(m, x.slice(0, 0, 2)));
  quant::prepare(*folded, example(folded, x.slice(0, 0, 2)), quant::QuantOptions().simulated_fold(true));
  CHECK_FALSE(m->named_buffers().contains("layer1.0.conv1.bn_fold.scale"));
  torch::NoGradGuard no_grad;
  for (auto* net : {&m, &folded}) {
    quant::calibration_mode(**net);
    (*net)->forward(x);
  }
  // The integers the weight quantiser rounds to while training.
  auto& wfq = *std::dynamic_pointer_cast<quant::FakeQuantizeImpl>(
      nn::extension(*m->named_modules()["layer1.0.conv1"], "weight_fake_quant"));
  wfq.calculate_qparams();  // calibration watched with rounding off
  const auto w = m->named_parameters()["layer1.0.conv1.weight"];
  const auto trained = torch::clamp(torch::round(w / wfq.scale.reshape({-1, 1, 1, 1})), -128, 127).to(torch::kInt);
  quant::convert(*m, example(m, x.slice(0, 0, 2)));
  quant::convert(*folded, example(folded, x.slice(0, 0, 2)));
  const auto q = m->named_buffers()["layer1.0.conv1.int8.weight"].to(torch::kInt);
  const auto factor = nn::batchnorm_factor(*m->named_modules()["layer1.0.bn1"]);
  const auto expected = trained * factor.sign().to(torch::kInt).reshape({-1, 1, 1, 1});
  // Equal but for a -128 that flips to +128 and clamps to 127 in a negative channel: at most 1 LSB.
  CHECK((q - expected).abs().max().item<int>() <= 1);
  CHECK((q != expected).sum().item<int64_t>() <= 2);
  CHECK(torch::equal(q.select(0, 0), trained.select(0, 0)));
  // And the int8 model computes what the simulated-fold one does.
  m->eval();
  folded->eval();
  CHECK(cosine(m->forward(x), folded->forward(x)) > 0.999);
}


TEST_CASE("quant: calibration with rounding off, then convert: the parameters come from the observed ranges", "[quant]") {
  auto m = tiny_resnet();
  settle_batchnorm(m);
  {
    torch::NoGradGuard no_grad;
    m->named_parameters()["fc.weight"].normal_(0, 0.1);
  }
  const auto x = torch::randn({32, 3, 16, 16}) * 0.5 + 0.2;
  torch::Tensor reference;
  {
    torch::NoGradGuard no_grad;
    m->eval();
    reference = m->forward(x);
  }
  quant::prepare(*m, example(m, x.slice(0, 0, 2)));
  torch::NoGradGuard no_grad;
  quant::calibration_mode(*m);
  m->forward(x);
  quant::convert(*m, example(m, x.slice(0, 0, 2)));  // no pass with rounding on in between
  m->eval();
  CHECK(cosine(m->forward(x), reference) > 0.99);
}

TEST_CASE("quant: an int8 model runs at any batch after its first (oneDNN's 1x1 conv on a 1x1 input)", "[quant]") {
  // ResNet-50 on 28x28 images: layer4 runs 1x1 convs on 1x1 maps. oneDNN keeps a pack's first weight
  // layout, and batch 1 then batch 8 failed there ("could not create a primitive descriptor").
  torch::manual_seed(0);
  auto m = models::create("resnet50", models::ModelOptions().num_classes(10).in_channels(1));
  const auto x = torch::randn({8, 1, 28, 28});
  const auto forward = [&m, x] { return std::vector<torch::Tensor>{m->forward(x.slice(0, 0, 1))}; };
  torch::NoGradGuard no_grad;
  m->eval();
  quant::prepare(*m, forward);
  quant::calibration_mode(*m);
  m->forward(x);
  quant::convert(*m, forward);  // runs the example at batch 1
  m->eval();
  const int threads = torch::get_num_threads();
  torch::set_num_threads(2);  // (it failed with 2 threads, as here, not with 1)
  CHECK(m->forward(x).sizes() == torch::IntArrayRef({8, 10}));
  CHECK(m->forward(x.slice(0, 0, 1)).sizes() == torch::IntArrayRef({1, 10}));
  torch::set_num_threads(threads);
}
