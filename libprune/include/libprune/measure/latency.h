#pragma once
// Measured latency: warm-up runs, then timed runs; median and p90 with the thread count used.
#include "libprune/nn/inputs.h"

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

namespace libprune::measure {

struct LatencyOptions {
  LatencyOptions() = default;
  TORCH_ARG(int, warmup) = 5;
  TORCH_ARG(int, runs) = 20;
  // Torch intra-op threads for the measurement; 0 keeps the current setting.
  TORCH_ARG(int, threads) = 0;
  // Also tries fewer threads: halves the count from `threads` (or the current setting) while that
  // gets faster, and reports the fastest. Small batches often run faster on fewer threads, since a
  // parallel region can cost more than the work it splits. Each count is probed with 3 calls and
  // measured in full unless the probe is over 25% slower than the best so far.
  TORCH_ARG(bool, search_threads) = false;
  // Converts the 4-D floating inputs, and the model's 4-D weights in place, to channels_last first.
  TORCH_ARG(bool, channels_last) = false;
  // Folds batch norms into the convs before them for the measurement, as an inference runtime
  // would (measure/fold_batchnorm.h); the model is unchanged afterwards.
  TORCH_ARG(bool, fold_batchnorm) = false;
};

struct Latency {
  double median_ms = 0, p90_ms = 0, mean_ms = 0, min_ms = 0;
  int runs = 0;
  int threads = 0;
  int64_t batch = 0;
  bool channels_last = false;
  int64_t batchnorms_folded = 0;
  // Median per thread count tried (one entry unless search_threads; a count that failed its probe
  // has the probe's median).
  std::map<int, double> median_ms_by_threads;
  std::string to_string() const;
};

// Times `run` (one inference) under the options; `batch` is recorded for the report.
Latency time_calls(const std::function<void()>& run, const LatencyOptions& options = {}, int64_t batch = 0);

// Times forward(inputs) in eval mode under inference mode (train flags restored afterwards); the
// batch size is the inputs' (images, or token ids with an attention mask).
Latency measure_latency(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                        nn::Inputs inputs, const LatencyOptions& options = {});

// model->forward_inputs(inputs), for models that take named inputs (the zoo).
template <typename ModuleLike>
Latency measure_latency(ModuleLike& model, const nn::Inputs& inputs, const LatencyOptions& options = {}) {
  return measure_latency(*model, [&model](const nn::Inputs& in) { return model->forward_inputs(in); }, inputs, options);
}

// model->forward(input), for any module with forward(Tensor).
template <typename ModuleLike>
Latency measure_latency(ModuleLike& model, const torch::Tensor& input, const LatencyOptions& options = {}) {
  return measure_latency(*model, [&model](const nn::Inputs& in) { return model->forward(in.single()); },
                         nn::Inputs{{"input", input}}, options);
}

}  // namespace libprune::measure
