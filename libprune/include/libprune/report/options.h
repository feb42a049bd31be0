#pragma once
// How a run's dense and pruned models are measured and compared (a recipe's `report` section),
// defined once (libprune/options.h).
#include "libprune/options.h"

#include <vector>

namespace libprune::report {

using Batches = std::vector<int64_t>;

enum class ScanMetric { top1, agreement };

// X("key", type, field, default, check, "meaning")
#define LIBPRUNE_REPORT_OPTIONS(X)                                                                                     \
  X("latency_runs", int, latency_runs, 20, ::libprune::options::check::at_least<int>(1, "e.g. 20"),                    \
    "latency is the median of this many timed calls")                                                                   \
  X("latency_warmup", int, latency_warmup, 5, ::libprune::options::check::at_least<int>(0, "e.g. 5"),                  \
    "untimed calls before them")                                                                                       \
  X("latency_threads", int, latency_threads, 0,                                                                         \
    ::libprune::options::check::at_least<int>(0, "0 times the training threads, then halves them while that is "        \
                                                 "faster; N > 0 times N threads"),                                      \
    "0: on CPU, time the training's thread count, then halve it while that gets faster, and keep the fastest; N: time " \
    "N threads only")                                                                                                   \
  X("latency_batches", Batches, latency_batches, (Batches{1, 32}), ::libprune::report::check_batches,                  \
    "batch sizes timed, reported as latency_ms_b<N>")                                                                   \
  X("fold_batchnorm", bool, fold_batchnorm, true, nullptr,                                                              \
    "fold each batch norm into the conv before it for the latency measurement, as an inference runtime does (dense "    \
    "and pruned alike; the model itself is not changed)")                                                              \
  X("latency_tokens", int64_t, latency_tokens, 0, ::libprune::options::check::at_least<int64_t>(0, "e.g. 128"),         \
    "text: time examples of this many tokens (the evaluation examples' ids repeated, every token attended); 0 times "  \
    "the evaluation data's own lengths")                                                                              \
  X("sensitivity_step", double, sensitivity_step, 0.0,                                                                  \
    ::libprune::options::check::in_range(0, false, 0.5, false, "e.g. 0.25 scans 25%, 50% and 75%; 0 scans nothing"),   \
    "sensitivity scan before the first cut: top-1 with only one group cut, for every group the first pruning stage "  \
    "may cut, at ratios step, 2 step, ... below 1 (summary.json's sensitivity, the report page's heat map); 0: off")    \
  X("sensitivity_batches", int64_t, sensitivity_batches, 8,                                                             \
    ::libprune::options::check::at_least<int64_t>(1, "e.g. 8"),                                                        \
    "eval batches each point of the sensitivity scan is measured on (the scan's cost is groups x ratios of them)")       \
  X("quant_sensitivity_bits", Batches, quant_sensitivity_bits, Batches{}, ::libprune::report::check_quant_bits,       \
    "quantization sensitivity scan of the final float model, before it is quantised (or of the final model when "   \
    "nothing is): the metric (quant_sensitivity_metric) with only one int8 unit quantised (its weight, its output, its input when no unit feeds it) " \
    "at each of these widths, e.g. [8, 4], on calibration_batches' ranges (summary.json's quant_sensitivity, the "    \
    "report page's heat map); []: off")                                                                              \
  X("quant_sensitivity_metric", ::libprune::report::ScanMetric, quant_sensitivity_metric,                              \
    ::libprune::report::ScanMetric::top1, nullptr,                                                                    \
    "what the quantization scan measures: top1 (accuracy), or agreement (% of eval images whose argmax is the float "  \
    "model's: what post-training quantization must keep, and finer where every unit costs a fraction of a point)")     \
  X("goal", std::string, goal, "", ::libprune::report::check_goal,                                                      \
    "compress to a target: latency_b<N>=<fraction of dense>, e.g. latency_b32=0.25; the run's rows are judged in the " \
    "recommended order (PTQ int8, pruned, pruned+int8 PTQ, pruned+int8 QAT) and the first within the goal and "       \
    "max_drop is chosen and saved as chosen.pt (libprune-run --goal)")                                                 \
  X("max_drop", double, max_drop, 0.5, ::libprune::options::check::in_range(0, false, 100, false, "e.g. 0.5"),          \
    "the most top-1 (points) a goal's chosen model may lose against dense (libprune-run --max-drop)")

// Every batch size >= 1.
std::string check_batches(const std::string& name, const Batches& batches);
// [] (no scan) or distinct bit widths in 2..8 (quant::check_sensitivity_bits).
std::string check_quant_bits(const std::string& name, const Batches& bits);
// "" or latency_b<N>=<fraction in (0, 1)>.
std::string check_goal(const std::string& name, const std::string& goal);

struct ReportOptions {
  ReportOptions() = default;
  LIBPRUNE_REPORT_OPTIONS(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<ReportOptions>>& specs();
  std::string problem(std::string* key) const;
  // The sensitivity scan's ratios: step, 2 step, ... below 1 (empty when the step is 0).
  std::vector<double> sensitivity_ratios() const;
};

}  // namespace libprune::report

namespace libprune::options {
template <>
struct EnumNames<report::ScanMetric> {
  static constexpr const char* what = "quantization scan metric";
  static constexpr const char* names[] = {"top1", "agreement"};
};
}  // namespace libprune::options
