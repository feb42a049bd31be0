#include "helpers.h"
#include "libprune/libprune.h"

#include <chrono>
#include <thread>

using namespace libprune;

TEST_CASE("latency: median and p90 over timed runs, with threads and batch", "[latency]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  m->train();
  const int threads_before = torch::get_num_threads();
  const auto lat = measure::measure_latency(m, torch::randn({4, 3, 32, 32}),
                                           measure::LatencyOptions().warmup(1).runs(5).threads(1).channels_last(true));
  CHECK(lat.runs == 5);
  CHECK(lat.threads == 1);
  CHECK(lat.batch == 4);
  CHECK(lat.channels_last);
  CHECK(lat.median_ms > 0);
  CHECK(lat.p90_ms >= lat.median_ms);
  CHECK(lat.min_ms <= lat.median_ms);
  CHECK(torch::get_num_threads() == threads_before);
  CHECK(m->is_training());
  CHECK(m->conv1->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
  CHECK_THAT(lat.to_string(), Catch::Contains("batch 4") && Catch::Contains("1 threads"));
}

TEST_CASE("latency: measures a known cost: forwards that sleep 3 ms and 6 ms, each call counted", "[latency]") {
  torch::nn::Linear holder(1, 1);  // the module measure_latency scopes; the forward below is what it times
  int calls = 0;
  const auto sleeping = [&calls](int ms) {
    return [&calls, ms](const nn::Inputs& in) {
      ++calls;
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      return in.single();
    };
  };
  const nn::Inputs x{{"x", torch::zeros({2, 1})}};
  const auto options = measure::LatencyOptions().warmup(2).runs(7).threads(1).fold_batchnorm(false);
  const auto three = measure::measure_latency(*holder, sleeping(3), x, options);
  CHECK(calls == 9);  // warmup and timed runs, nothing else
  const auto six = measure::measure_latency(*holder, sleeping(6), x, options);
  // A sleep lasts at least its time. It overshoots by well under a millisecond on a quiet machine,
  // but a loaded CI can wake it late several times in 7 runs: the fastest run tells the two apart.
  CHECK(three.median_ms >= 3.0);
  CHECK(six.median_ms >= 6.0);
  CHECK(three.min_ms >= 3.0);
  CHECK(three.min_ms < 6.0);
  CHECK(six.min_ms >= 6.0);
  CHECK(six.min_ms < 6.0 + 20);
  CHECK(three.p90_ms >= three.median_ms);
  CHECK(three.batch == 2);
}

TEST_CASE("latency_ratio: a model against a reference, each timed twice, interleaved", "[latency]") {
  torch::nn::Linear a(1, 1), b(1, 1);
  std::vector<std::pair<int, int>> phases;  // (ms, calls in a row)
  const auto sleeping = [&phases](torch::nn::Linear& layer, int ms) {
    return [&phases, &layer, ms](const nn::Inputs& in) {
      if (phases.empty() || phases.back().first != ms) phases.emplace_back(ms, 0);
      ++phases.back().second;
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      return layer->forward(in.single());
    };
  };
  const nn::Inputs x{{"x", torch::zeros({2, 1})}};
  const double ratio = measure::latency_ratio(*a, sleeping(a, 6), *b, sleeping(b, 2), x, measure::LatencyTableOptions().threads(1));
  REQUIRE(phases.size() == 4);
  for (size_t i = 0; i < phases.size(); ++i) {
    CHECK(phases[i].first == (i % 2 == 0 ? 2 : 6));  // the reference first, then the model, twice
    CHECK(phases[i].second >= 20);                     // a whole measurement each time
  }
  // 6 ms against 2 ms; sleeps overshoot by a fraction of a millisecond on a quiet machine.
  CHECK(ratio > 1.5);
  CHECK(ratio < 3.5);
}

TEST_CASE("latency: search_threads halves the thread count while that is faster and reports the fastest", "[latency]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  const int threads_before = torch::get_num_threads();
  const auto x = torch::randn({1, 3, 16, 16});
  const auto lat = measure::measure_latency(m, x, measure::LatencyOptions().warmup(1).runs(3).threads(4).search_threads(true));
  // 4 threads first, then 2, then 1 only while each was faster than the last.
  REQUIRE(lat.median_ms_by_threads.count(4) == 1);
  REQUIRE(lat.median_ms_by_threads.count(2) == 1);
  double fastest = lat.median_ms_by_threads.at(4);
  for (const auto& [threads, ms] : lat.median_ms_by_threads) fastest = std::min(fastest, ms);
  CHECK(lat.median_ms == fastest);
  CHECK(lat.median_ms_by_threads.at(lat.threads) == lat.median_ms);
  if (lat.median_ms_by_threads.at(2) >= lat.median_ms_by_threads.at(4)) CHECK(lat.median_ms_by_threads.count(1) == 0);
  CHECK(torch::get_num_threads() == threads_before);
  // Without it, one count only.
  const auto one = measure::measure_latency(m, x, measure::LatencyOptions().warmup(1).runs(3).threads(2));
  CHECK(one.median_ms_by_threads.size() == 1);
  CHECK(one.threads == 2);
}

TEST_CASE("latency: bad options are errors", "[latency]") {
  auto m = models::create("cifar_resnet20", models::ModelOptions().num_classes(10));
  CHECK_THROWS_WITH(measure::measure_latency(m, torch::randn({1, 3, 32, 32}), measure::LatencyOptions().runs(0)),
                    Catch::Contains("runs must be at least 1"));
  auto mlp = torch::nn::Linear(4, 2);
  CHECK_THROWS_WITH(measure::measure_latency(mlp, torch::randn({2, 4}), measure::LatencyOptions().channels_last(true)),
                    Catch::Contains("channels_last needs a 4-D"));
}

namespace {
// Batch-norm statistics and affine terms away from their identity defaults, so folding is not trivial.
void randomize_norms(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  for (auto& b : m.named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.5, 0.5);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2.0);
  }
  for (auto& p : m.named_parameters()) {
    if (p.key().find("bn") != std::string::npos || p.key().find("downsample.1") != std::string::npos) {
      p.value().uniform_(0.5, 1.5);
    }
  }
}

// Extensions installed on the model's modules.
size_t extension_count(torch::nn::Module& model) {
  size_t n = 0;
  for (const auto& m : model.modules()) n += nn::extensions(*m).size();
  return n;
}

// A conv and a batch norm that its forward calls directly, not through libprune::nn::call.
struct DirectImpl : torch::nn::Module {
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Conv2d head{nullptr};
  torch::nn::BatchNorm2d head_bn{nullptr};
  torch::nn::Conv2d tail{nullptr};
  torch::nn::BatchNorm2d tail_bn{nullptr};
  DirectImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    bn = register_module("bn", torch::nn::BatchNorm2d(8));
    head = register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 1)));
    head_bn = register_module("head_bn", torch::nn::BatchNorm2d(8));
    tail = register_module("tail", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 4, 3).stride(2)));  // with a bias
    tail_bn = register_module("tail_bn", torch::nn::BatchNorm2d(4));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = bn(conv(x)).relu();
    auto h = libprune::nn::call(head, x);
    auto y = libprune::nn::call(head_bn, h) + h;  // the conv's output is read twice
    return libprune::nn::call(tail_bn, libprune::nn::call(tail, y));
  }
};
TORCH_MODULE(Direct);
}  // namespace

TEST_CASE("fold_batchnorm: every conv+BN pair of a ResNet folds, outputs agree, the model is untouched",
          "[latency]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  randomize_norms(*m);
  m->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 32, 32});
  const auto before = test::snapshot(*m);
  const auto reference = m->forward(x);
  const auto other_batch = torch::randn({5, 3, 32, 32});
  const auto other_reference = m->forward(other_batch);
  {
    measure::BatchNormFolding folding(*m, [&] { return std::vector<torch::Tensor>{m->forward(x)}; });
    CHECK(folding.folded().size() == 21);  // stem, 18 in the blocks, 2 projections
    CHECK(folding.skipped().empty());
    CHECK(folding.folded().front().conv == "conv1");
    CHECK(folding.folded().front().norm == "bn1");
    CHECK(extension_count(*m) == 42);
    CHECK(torch::allclose(m->forward(x), reference, 1e-4, 1e-4));
    // Another batch size than the example's: still folded, still the same function.
    CHECK(torch::allclose(m->forward(other_batch), other_reference, 1e-4, 1e-4));
    CHECK(test::same(before, test::snapshot(*m)));  // extensions only: no weight was edited
    // In training mode both modules run their own forward: BN updates its statistics.
    m->train();
    const auto mean = m->bn1->running_mean.clone();
    m->forward(x);
    CHECK_FALSE(torch::equal(mean, m->bn1->running_mean));
  }
  CHECK(extension_count(*m) == 0);
}

TEST_CASE("fold_batchnorm: pairs it cannot fold are listed with the reason and left as they are", "[latency]") {
  Direct m;
  randomize_norms(*m);
  m->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 8, 8});
  const auto reference = m->forward(x);
  const auto before = test::snapshot(*m);
  measure::BatchNormFolding folding(*m, [&] { return std::vector<torch::Tensor>{m->forward(x)}; });
  REQUIRE(folding.folded().size() == 1);
  CHECK(folding.folded()[0].conv == "tail");
  REQUIRE(folding.skipped().size() == 2);
  const std::string all = folding.skipped()[0] + "\n" + folding.skipped()[1];
  CHECK_THAT(all, Catch::Contains("head_bn: the output of 'head' is also read elsewhere"));
  CHECK_THAT(all, Catch::Contains("bn: 'conv' is not called through libprune::nn::call") &&
                      Catch::Contains("Fix: call it as libprune::nn::call(module, x)"));
  CHECK(extension_count(*m) == 2);
  CHECK(torch::allclose(m->forward(x), reference, 1e-4, 1e-4));
  CHECK(test::same(before, test::snapshot(*m)));  // the conv's bias and weight are not edited
}

TEST_CASE("latency: fold_batchnorm times the folded model and leaves it as it was", "[latency]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  randomize_norms(*m);
  const auto before = test::snapshot(*m);
  const auto lat = measure::measure_latency(
      m, torch::randn({2, 3, 32, 32}), measure::LatencyOptions().warmup(1).runs(3).channels_last(true).fold_batchnorm(true));
  CHECK(lat.batchnorms_folded == 21);
  CHECK_THAT(lat.to_string(), Catch::Contains("21 batch norms folded"));
  CHECK(extension_count(*m) == 0);
  CHECK(test::same(before, test::snapshot(*m)));
}

TEST_CASE("fold_batchnorm: a diverged model (NaN in its output) still folds", "[latency]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  randomize_norms(*m);
  m->eval();
  torch::NoGradGuard no_grad;
  m->fc->weight[0][0] = std::numeric_limits<float>::quiet_NaN();
  const auto x = torch::randn({2, 3, 32, 32});
  REQUIRE(m->forward(x).isnan().any().item<bool>());
  measure::BatchNormFolding folding(*m, [&] { return std::vector<torch::Tensor>{m->forward(x)}; });
  CHECK(folding.folded().size() == 21);
}

TEST_CASE("fold_batchnorm: tensors replaced through set_data (checkpoint loads, pruning) fold again", "[latency]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  randomize_norms(*m);
  m->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 32, 32});
  torch::Tensor folded;
  {
    measure::BatchNormFolding folding(*m, [&] { return std::vector<torch::Tensor>{m->forward(x)}; });
    m->forward(x);  // the folded tensors are cached now
    // Same tensor object, same version counter, new storage: what a checkpoint load does.
    m->conv1->weight.set_data(torch::randn_like(m->conv1->weight));
    m->bn1->running_var.set_data(m->bn1->running_var * 3 + 0.5);
    folded = m->forward(x);
  }
  CHECK(torch::allclose(m->forward(x), folded, 1e-4, 1e-4));
}

TEST_CASE("latency: int8 is timed on fresh packs for each shape and thread count", "[latency]") {
  // oneDNN caches code per packed weight, input shape and thread count: an int8 model run first at
  // one batch and then timed at another would time the first shape's kernels.
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  const auto x = torch::randn({8, 3, 16, 16});
  const graph::Forward example = [&m, x] { return std::vector<torch::Tensor>{m->forward(x.slice(0, 0, 2))}; };
  quant::prepare(*m, example, quant::QuantOptions().observer(quant::Observer::min_max));
  {
    torch::NoGradGuard no_grad;
    quant::calibration_mode(*m);
    m->forward(x);
    m->eval();
  }
  quant::convert(*m, example);
  torch::NoGradGuard no_grad;
  m->forward(x);  // packs for batch 8
  quant::repack(*m);
  auto before = quant::packs_made();
  m->forward(x);
  // One per conv and linear that runs an int8 kernel: 21 convs; fc (the logits) computes in float.
  const auto per_pass = quant::packs_made() - before;
  CHECK(per_pass == 21);
  before = quant::packs_made();
  m->forward(x.slice(0, 0, 1));
  CHECK(quant::packs_made() == before);  // a plain call reuses the batch-8 packs

  before = quant::packs_made();
  const auto one = measure::measure_latency(m, x.slice(0, 0, 1), measure::LatencyOptions().warmup(1).runs(2).threads(1));
  CHECK(one.batch == 1);
  CHECK(quant::packs_made() - before == per_pass);  // fresh for batch 1
  // Searching thread counts: the full count, then a probe at half (and, if it is not clearly
  // slower, a full measurement there), each on fresh packs.
  before = quant::packs_made();
  measure::measure_latency(m, x, measure::LatencyOptions().warmup(1).runs(2).threads(2).search_threads(true));
  const auto made = quant::packs_made() - before;
  CHECK(made % per_pass == 0);
  CHECK(made >= 2 * per_pass);
  CHECK(made <= 3 * per_pass);
}
