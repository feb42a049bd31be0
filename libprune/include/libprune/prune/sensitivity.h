#pragma once
// A sensitivity scan: for every group the pruner may cut, the model's metric (accuracy on held-out
// data) with only that group cut, at several ratios. It says where a model can lose width cheaply
// and where it cannot (Distiller's and NNI's sensitivity analysis), per group rather than per
// layer, so coupled layers (a residual stage) are scanned as the one unit they are cut as.
#include <string>
#include <vector>

namespace libprune::prune {

struct SensitivityRow {
  std::string group;                 // graph::Group::name()
  std::vector<std::string> modules;  // the modules whose outputs it cuts
  int64_t size = 0;                  // its units now
  std::vector<int64_t> kept;         // units kept at each ratio (min_channels and round_to applied)
  std::vector<double> metric;        // the metric with only this group cut, at each ratio
};

struct Sensitivity {
  std::vector<double> ratios;
  double baseline = 0;               // the metric of the model as it is
  std::vector<SensitivityRow> rows;  // every free group, in graph order
  // Free groups a LayerNorm or GroupNorm normalises across: zeroing their units is not what their
  // cut computes, so they are not scanned.
  std::vector<std::string> skipped;
  double seconds = 0;

  // {"ratios", "baseline", "seconds", "rows": [{"group", "modules", "size", "kept", "metric"}]}
  std::string to_json() const;
  // A table: a line per group, the metric's drop from the baseline at each ratio.
  std::string to_string() const;
  // Back from to_json() (a checkpoint's copy); throws naming the key that is missing or malformed.
  static Sensitivity from_json(const std::string& text);
  // The metric drop `row` predicts with `removed` of its `size` units cut: 0 at none, linear between
  // the scanned points (at the kept counts the scan really cut to), the last segment's slope beyond
  // the last; a metric above the baseline (noise) is no drop, and the curve never falls.
  double predicted_drop(const SensitivityRow& row, double removed) const;
  // The row of `group` (graph::Group::name()), or null.
  const SensitivityRow* row(const std::string& group) const;
};

// The problem with scan ratios ("" when none): at least one, each in (0, 1).
std::string check_sensitivity_ratios(const std::string& name, const std::vector<double>& ratios);

}  // namespace libprune::prune
