// Benchmark: int8 against fp32 latency of the same model in C++, post-training quantized by
// libprune (calibrated on random batches; latency does not depend on the weights' values).
// fp32 runs in its fastest layout here (channels_last, batch norms folded); int8 on fresh packs
// for every shape and thread count. Rounds alternate fp32 and int8; prints each round's medians
// and the median and spread of the ratios.
//
//   build/libprune-quant-bench [--rounds 3] [--runs 30] [--threads 2] [--depth 20] [--in-channels 1] [--size 28]
#include "libprune/libprune.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A QAT training step against the fp32 step: same model, batch 128, channels_last, SGD.
void qat_step(int64_t depth, const libprune::models::ModelOptions& opts, int64_t in_channels, int64_t size, int threads,
              int rounds) {
  using namespace libprune;
  auto dense = models::cifar_resnet(depth, opts);
  auto qat = models::cifar_resnet(depth, opts);
  const auto x = torch::randn({128, in_channels, size, size}).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto y = torch::randint(0, 10, {128});
  quant::prepare(*qat, [&] { return std::vector<torch::Tensor>{qat->forward(x.slice(0, 0, 2))}; });
  nn::to_memory_format(*dense, torch::MemoryFormat::ChannelsLast);
  nn::to_memory_format(*qat, torch::MemoryFormat::ChannelsLast);
  const auto step_ms = [&](models::ResNet& m) {
    torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
    m->train();
    std::vector<double> ms;
    for (int i = 0; i < 12; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      opt.zero_grad();
      torch::nn::functional::cross_entropy(m->forward(x), y).backward();
      opt.step();
      if (i >= 2) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return median(ms);
  };
  torch::set_num_threads(threads);
  std::vector<double> ratio;
  for (int r = 0; r < rounds; ++r) {
    const double f = step_ms(dense), q = step_ms(qat);
    ratio.push_back(q / f);
    std::printf("training step, batch 128, round %d: fp32 %.1f ms, QAT %.1f ms, %.2fx\n", r + 1, f, q, q / f);
  }
  std::printf("QAT step / fp32 step: %.2fx (rounds %.2fx-%.2fx); target <= 1.3x\n", median(ratio),
              *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()));
}

}  // namespace

int main(int argc, char** argv) {
  using namespace libprune;
  int rounds = 3, runs = 30, threads = 2;
  int64_t depth = 20, in_channels = 1, size = 28;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const int64_t v = std::stoll(argv[i + 1]);
    if (k == "--rounds") rounds = static_cast<int>(v);
    else if (k == "--runs") runs = static_cast<int>(v);
    else if (k == "--threads") threads = static_cast<int>(v);
    else if (k == "--depth") depth = v;
    else if (k == "--in-channels") in_channels = v;
    else if (k == "--size") size = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    torch::manual_seed(0);
    const auto opts = models::ModelOptions().num_classes(10).in_channels(in_channels);
    auto fp32 = models::cifar_resnet(depth, opts);
    auto int8 = models::cifar_resnet(depth, opts);
    {
      torch::NoGradGuard no_grad;
      fp32->train();
      for (int i = 0; i < 4; ++i) fp32->forward(torch::randn({32, in_channels, size, size}));
      for (auto& item : int8->named_parameters()) item.value().copy_(fp32->named_parameters()[item.key()]);
      for (auto& item : int8->named_buffers()) item.value().copy_(fp32->named_buffers()[item.key()]);
    }
    const auto calib = torch::randn({256, in_channels, size, size});
    const auto example = [&] { return std::vector<torch::Tensor>{int8->forward(calib.slice(0, 0, 2))}; };
    quant::prepare(*int8, example, quant::QuantOptions().observer(quant::Observer::min_max));
    quant::calibration_mode(*int8);
    {
      torch::NoGradGuard no_grad;
      for (int i = 0; i < 8; ++i) int8->forward(calib.slice(0, i * 32, (i + 1) * 32));
    }
    const auto report = quant::convert(*int8, example);
    fp32->eval();
    const auto test = torch::randn({256, in_channels, size, size});
    double agree = 0;
    {
      torch::NoGradGuard no_grad;
      agree = (fp32->forward(test).argmax(1) == int8->forward(test).argmax(1)).to(torch::kFloat).mean().item<double>();
    }
    int64_t float_bytes = 0;
    for (const auto& t : fp32->parameters()) float_bytes += t.numel() * 4;
    for (const auto& t : fp32->buffers()) float_bytes += t.numel() * static_cast<int64_t>(t.element_size());
    std::printf("cifar resnet-%lld, %lldx%lldx%lld inputs, %d threads, engine %s; %zu int8 units, %zu left in float\n",
                static_cast<long long>(depth), static_cast<long long>(in_channels), static_cast<long long>(size),
                static_cast<long long>(size), threads, "onednn", report.quantized.size(), report.skipped.size());
    std::printf("state: fp32 %lld bytes, int8 %lld bytes (%.2fx smaller); argmax agreement with fp32 on random inputs %.3f\n",
                static_cast<long long>(float_bytes), static_cast<long long>(quant::int8_state_bytes(*int8)),
                static_cast<double>(float_bytes) / static_cast<double>(quant::int8_state_bytes(*int8)), agree);
    for (const int64_t batch : {int64_t{1}, int64_t{32}}) {
      const auto x = torch::randn({batch, in_channels, size, size});
      std::vector<double> f_ms, q_ms, ratio;
      for (int r = 0; r < rounds; ++r) {
        const auto f = measure::measure_latency(fp32, x, measure::LatencyOptions().threads(threads).runs(runs).warmup(5)
                                                            .channels_last(true).fold_batchnorm(true));
        const auto q = measure::measure_latency(int8, x, measure::LatencyOptions().threads(threads).runs(runs).warmup(5)
                                                            .channels_last(true));
        f_ms.push_back(f.median_ms);
        q_ms.push_back(q.median_ms);
        ratio.push_back(f.median_ms / q.median_ms);
        std::printf("batch %lld round %d: fp32 %.3f ms, int8 %.3f ms, %.2fx\n", static_cast<long long>(batch), r + 1,
                    f.median_ms, q.median_ms, f.median_ms / q.median_ms);
      }
      std::printf("batch %lld: fp32 %.3f ms, int8 %.3f ms (medians over rounds); int8 speed-up %.2fx (rounds %.2fx-%.2fx)\n",
                  static_cast<long long>(batch), median(f_ms), median(q_ms), median(ratio),
                  *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()));
    }
    qat_step(depth, opts, in_channels, size, threads, rounds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "libprune-quant-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
