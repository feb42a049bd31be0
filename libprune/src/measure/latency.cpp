#include "libprune/measure/latency.h"

#include "libprune/nn/eval_mode.h"
#include "libprune/measure/fold_batchnorm.h"
#include "libprune/quant/quantize.h"
#include "libprune/nn/memory_format.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <sstream>

namespace libprune::measure {
namespace {

class ThreadGuard {
 public:
  explicit ThreadGuard(int threads) : previous_(torch::get_num_threads()) {
    if (threads > 0) torch::set_num_threads(threads);
  }
  ~ThreadGuard() { torch::set_num_threads(previous_); }

 private:
  int previous_;
};

double percentile(std::vector<double> sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const auto hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

std::string Latency::to_string() const {
  std::ostringstream s;
  s.precision(3);
  s << std::fixed << "median " << median_ms << " ms, p90 " << p90_ms << " ms (batch " << batch << ", " << threads
    << " threads, " << runs << " runs" << (channels_last ? ", channels_last" : "");
  if (batchnorms_folded > 0) s << ", " << batchnorms_folded << " batch norms folded";
  s << ")";
  return s.str();
}

Latency time_calls(const std::function<void()>& run, const LatencyOptions& options, int64_t batch) {
  TORCH_CHECK_VALUE(options.runs() > 0, "latency: runs must be at least 1, got ", options.runs());
  TORCH_CHECK_VALUE(options.warmup() >= 0, "latency: warmup must be >= 0, got ", options.warmup());
  ThreadGuard threads(options.threads());
  for (int i = 0; i < options.warmup(); ++i) run();
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(options.runs()));
  for (int i = 0; i < options.runs(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  Latency out;
  out.runs = options.runs();
  out.threads = torch::get_num_threads();
  out.batch = batch;
  out.channels_last = options.channels_last();
  out.median_ms = percentile(ms, 0.5);
  out.p90_ms = percentile(ms, 0.9);
  out.min_ms = ms.front();
  out.mean_ms = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(ms.size());
  out.median_ms_by_threads[out.threads] = out.median_ms;
  return out;
}

Latency measure_latency(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                        nn::Inputs inputs, const LatencyOptions& options) {
  nn::EvalModeGuard eval(module);
  if (options.channels_last()) {
    bool images = false;
    inputs = inputs.map([&](const torch::Tensor& t) {
      const bool image = t.dim() == 4 && t.is_floating_point();
      images = images || image;
      return image ? t.contiguous(torch::MemoryFormat::ChannelsLast) : t;
    });
    TORCH_CHECK_VALUE(images, "measure_latency: channels_last needs a 4-D [N, C, H, W] input, got ", inputs.describe(),
                      ". Fix: set channels_last(false) for this model");
    nn::to_memory_format(module, torch::MemoryFormat::ChannelsLast);
  }
  // An int8 model's batch norms are fused into its kernels already. Its kernels are packed again
  // before each thread count is timed: oneDNN caches code per pack, shape and thread count.
  const bool int8 = quant::is_converted(module);
  std::unique_ptr<BatchNormFolding> folding;
  if (options.fold_batchnorm() && !int8) {
    folding = std::make_unique<BatchNormFolding>(module, [&] { return std::vector<torch::Tensor>{forward(inputs)}; });
  }
  const bool cuda = !inputs.items().empty() && inputs.items().front().second.is_cuda();
  c10::InferenceMode inference;
  const auto run = [&] {
    forward(inputs);
    if (cuda) torch::cuda::synchronize();
  };
  const int64_t batch = inputs.batch_size();
  const auto timed = [&](const LatencyOptions& o) {
    if (int8) quant::repack(module);
    return time_calls(run, o, batch);
  };
  auto out = timed(options);
  if (options.search_threads() && !cuda) {
    // From the most threads down, halving while the median improves (one model, one input: the
    // time is close to unimodal in the thread count).
    auto tried = out.median_ms_by_threads;
    for (int n = out.threads / 2; n >= 1; n /= 2) {
      // A short probe first: a count clearly slower (a big model on fewer cores) ends the search
      // without a full measurement, which at batch 32 on one core can take minutes.
      const auto probe = timed(LatencyOptions(options).threads(n).warmup(1).runs(std::min(3, options.runs())));
      tried[probe.threads] = probe.median_ms;
      if (probe.median_ms > 1.25 * out.median_ms) break;
      auto fewer = timed(LatencyOptions(options).threads(n));
      tried[fewer.threads] = fewer.median_ms;
      if (fewer.median_ms >= out.median_ms) break;
      out = fewer;
    }
    out.median_ms_by_threads = tried;
  }
  out.batchnorms_folded = folding ? static_cast<int64_t>(folding->folded().size()) : 0;
  return out;
}

}  // namespace libprune::measure
