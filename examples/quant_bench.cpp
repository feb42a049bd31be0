// Benchmark: int8 against fp32 latency of the same model in C++, post-training quantized by
// libprune (calibrated on random batches; latency does not depend on the weights' values).
// fp32 runs in its fastest layout here (channels_last, batch norms folded); int8 on fresh packs
// for every shape and thread count. Rounds alternate fp32 and int8; prints each round's medians
// and the median and spread of the ratios.
//
//   build/libprune-quant-bench [--rounds 3] [--runs 30] [--threads 2] [--model cifar_resnet20] [--in-channels 1]
//                              [--size 28] [--batches 1,32] [--test-images 256] [--qat-step 1]
//   ResNet-50 PTQ: --model resnet50 --in-channels 3 --size 224 --batches 8 --test-images 512 --qat-step 0
//   mixed precision: --keep-float layer4.2.conv3,fc (units kept float, as QuantOptions::keep_float)
#include "libprune/libprune.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A QAT training step against the fp32 step: same model, batch 128, channels_last, SGD.
void qat_step(const std::string& name, const libprune::models::ModelOptions& opts, int64_t in_channels, int64_t size,
              int threads, int rounds) {
  using namespace libprune;
  auto dense = models::create(name, opts);
  auto qat = models::create(name, opts);
  const auto x = torch::randn({128, in_channels, size, size}).contiguous(torch::MemoryFormat::ChannelsLast);
  const auto y = torch::randint(0, 10, {128});
  quant::prepare(*qat, [&] { return std::vector<torch::Tensor>{qat->forward(x.slice(0, 0, 2))}; });
  nn::to_memory_format(*dense, torch::MemoryFormat::ChannelsLast);
  nn::to_memory_format(*qat, torch::MemoryFormat::ChannelsLast);
  const auto step_ms = [&](models::ModelPtr& m) {
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

struct Args {
  int rounds = 3, runs = 30, threads = 2;
  std::string model = "cifar_resnet20";
  int64_t in_channels = 1, size = 28, test_images = 256, qat = 1;
  std::vector<int64_t> batches{1, 32};
  std::vector<std::string> keep_float;
};

std::vector<std::string> split(const std::string& v) {
  std::vector<std::string> out;
  for (size_t at = 0; at < v.size();) {
    const size_t comma = v.find(',', at);
    out.push_back(v.substr(at, comma - at));
    at = comma == std::string::npos ? v.size() : comma + 1;
  }
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") {
      a.model = v;
    } else if (k == "--batches") {
      a.batches.clear();
      for (const auto& b : split(v)) a.batches.push_back(std::stoll(b));
    } else if (k == "--keep-float") {
      a.keep_float = split(v);
    } else {
      const int64_t n = std::stoll(v);
      if (k == "--rounds") a.rounds = static_cast<int>(n);
      else if (k == "--runs") a.runs = static_cast<int>(n);
      else if (k == "--threads") a.threads = static_cast<int>(n);
      else if (k == "--in-channels") a.in_channels = n;
      else if (k == "--size") a.size = n;
      else if (k == "--test-images") a.test_images = n;
      else if (k == "--qat-step") a.qat = n;
      else throw std::invalid_argument("unknown option " + k);
    }
  }
  return a;
}

// PTQ of `a.model` (calibrated on 8 random batches distinct from the test images), then int8
// against fp32: state size, argmax agreement, latency per batch size.
void ptq(const Args& a) {
  using namespace libprune;
  const auto opts = models::ModelOptions().num_classes(a.model.rfind("cifar", 0) == 0 ? 10 : 1000).in_channels(a.in_channels);
  auto fp32 = models::create(a.model, opts);
  auto int8 = models::create(a.model, opts);
  {
    torch::NoGradGuard no_grad;
    fp32->train();
    for (int i = 0; i < 4; ++i) fp32->forward(torch::randn({8, a.in_channels, a.size, a.size}));
    for (auto& item : int8->named_parameters()) item.value().copy_(fp32->named_parameters()[item.key()]);
    for (auto& item : int8->named_buffers()) item.value().copy_(fp32->named_buffers()[item.key()]);
  }
  const auto calib = torch::randn({64, a.in_channels, a.size, a.size});
  const auto example = [&] { return std::vector<torch::Tensor>{int8->forward(calib.slice(0, 0, 2))}; };
  quant::prepare(*int8, example, quant::QuantOptions().observer(quant::Observer::min_max).keep_float(a.keep_float));
  quant::calibration_mode(*int8);
  {
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 8; ++i) int8->forward(calib.slice(0, i * 8, (i + 1) * 8));
  }
  const auto report = quant::convert(*int8, example);
  fp32->eval();
  int64_t agree = 0;
  {
    torch::NoGradGuard no_grad;
    for (int64_t done = 0; done < a.test_images; done += 32) {
      const auto test = torch::randn({std::min<int64_t>(32, a.test_images - done), a.in_channels, a.size, a.size});
      agree += (fp32->forward(test).argmax(1) == int8->forward(test).argmax(1)).sum().item<int64_t>();
    }
  }
  int64_t float_bytes = 0;
  for (const auto& t : fp32->parameters()) float_bytes += t.numel() * 4;
  for (const auto& t : fp32->buffers()) float_bytes += t.numel() * static_cast<int64_t>(t.element_size());
  std::printf("%s, %lldx%lldx%lld inputs, %d threads, engine onednn; %zu int8 units, %zu left in float\n", a.model.c_str(),
              static_cast<long long>(a.in_channels), static_cast<long long>(a.size), static_cast<long long>(a.size),
              a.threads, report.quantized.size(), report.skipped.size());
  std::printf("state: fp32 %lld bytes, int8 %lld bytes (%.2fx smaller); argmax agreement with fp32 on %lld random "
              "inputs (not the calibration ones) %.4f\n",
              static_cast<long long>(float_bytes), static_cast<long long>(quant::int8_state_bytes(*int8)),
              static_cast<double>(float_bytes) / static_cast<double>(quant::int8_state_bytes(*int8)),
              static_cast<long long>(a.test_images), static_cast<double>(agree) / static_cast<double>(a.test_images));
  for (const int64_t batch : a.batches) {
    const auto x = torch::randn({batch, a.in_channels, a.size, a.size});
    std::vector<double> f_ms, q_ms, ratio;
    for (int r = 0; r < a.rounds; ++r) {
      const auto f = measure::measure_latency(fp32, x, measure::LatencyOptions().threads(a.threads).runs(a.runs).warmup(3)
                                                          .channels_last(true).fold_batchnorm(true));
      const auto q = measure::measure_latency(int8, x, measure::LatencyOptions().threads(a.threads).runs(a.runs).warmup(3)
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
}

}  // namespace

int main(int argc, char** argv) {
  using namespace libprune;
  try {
    const Args a = parse(argc, argv);
    torch::manual_seed(0);
    ptq(a);
    if (a.qat) {
      qat_step(a.model, models::ModelOptions().num_classes(10).in_channels(a.in_channels), a.in_channels, a.size, a.threads,
               a.rounds);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "libprune-quant-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
