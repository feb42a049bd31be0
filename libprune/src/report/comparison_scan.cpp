// The report's quantization sensitivity scan, and the float units it chooses for mixed precision.
#include "comparison.h"

#include "libprune/quant/sensitivity.h"
#include "libprune/nn/random_guard.h"

#include <algorithm>

namespace libprune::report::detail {

quant::Names Comparison::with_worst_units(quant::Names kept) const {
  TORCH_CHECK_VALUE(!quant_sensitivity_.is_null(), "quantization.keep_float_worst: the quantization scan has not run. "
                    "Fix: set report.quant_sensitivity_bits to [8]");
  // The scan covers keep_float's units too: the worst N beside them (the runner checked that N
  // leaves a unit quantised).
  const auto rows = static_cast<int64_t>(quant_sensitivity_.at("rows").size());
  const auto order = quant::worst_units(quant_sensitivity_.dump(), 8, std::max<int64_t>(0, rows - 1));
  int64_t added = 0;
  for (size_t i = 0; i < order.size() && added < quant_.keep_float_worst; ++i) {
    if (std::find(kept.begin(), kept.end(), order[i]) != kept.end()) continue;
    kept.push_back(order[i]);
    ++added;
  }
  return kept;
}

void Comparison::scan_quantization() {
  const auto& bits = options_.quant_sensitivity_bits();
  if (bits.empty() || !quant_sensitivity_.is_null()) return;
  // The copy draws initial weights: the run's random stream (dropout, QAT's first epoch) must not
  // depend on whether the report scans.
  // Float: a QAT model's quantisers stay behind (a run resumed after QAT started scans its trained weights).
  const auto net = [&] {
    const nn::RandomStreamGuard keep;
    return copy(trainer_.model(), true);
  }();
  const auto forward = [net](const nn::Inputs& x) { return net->forward_inputs(x); };
  const bool agree = options_.quant_sensitivity_metric() == ScanMetric::agreement;
  // Top-1 on the scan's eval batches, and their logits.
  const auto run = [&] {
    std::vector<torch::Tensor> out;
    const double top1 = trainer_.evaluate(*net, [&](const nn::Inputs& x) {
      auto logits = net->forward_inputs(x);  // on the trainer's device, as evaluate compares them there
      if (agree) out.push_back(logits.to(torch::kCPU, torch::kDouble));
      return logits;
    }, options_.sensitivity_batches()).top1;
    return std::make_pair(top1, out.empty() ? torch::zeros({0, 0}, torch::kDouble) : torch::cat(out));
  };
  const auto reference = agree ? run().second : torch::Tensor();  // the float model's, for agreement
  const auto metric = [&] {
    const auto [top1, logits] = run();
    if (!agree) return top1;
    json f;
    agreement(f, reference, logits, "float", trainer_.process_group());
    return f["argmax_agreement_with_float"].get<double>();
  };
  const auto scan = quant::sensitivity(*net, example_forward(net),
                                       [&] { trainer_.calibrate(forward, quant_.calibration_batches); }, metric, bits,
                                       // Every unit, keep_float's too: the scan is what keep_float is chosen from.
                                       quant::QuantOptions(quant_.options).observer(quant_.calibration_observer).keep_float({}));
  quant_sensitivity_ = json::parse(scan.to_json());
  quant_sensitivity_["metric"] = agree ? "agreement" : "top1";
  quant_sensitivity_["eval_batches"] = options_.sensitivity_batches();
  quant_sensitivity_["calibration_batches"] = quant_.calibration_batches;
  quant_sensitivity_["of"] = quant::is_prepared(*trainer_.model()) ? "the QAT model's float weights (resumed after QAT started)"
                                                                    : "the float model before quantization";
  if (printed_to) {
    *printed_to << "quantization sensitivity (" << (agree ? "argmax agreement with the float model" : "top-1")
                << " lost, " << options_.sensitivity_batches() << " eval batches):\n" << scan.to_string() << std::flush;
  }
}

}  // namespace libprune::report::detail
