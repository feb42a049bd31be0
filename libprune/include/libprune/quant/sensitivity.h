#pragma once
// A quantization sensitivity scan: for every unit quant::prepare would place (conv + batch norm +
// ReLU, linear, add), the model's metric with only that unit quantised, at several bit widths (8 and
// 4 by default): its weight rounded per output channel and its output (and any float input) rounded
// on ranges calibrated on the user's batches, everything else float. It says which layers can go
// to int8, or lower, cheaply and which should stay wider (AIMET's per-layer quantization analysis,
// HAWQ's question answered by measurement). Below 8 bits the rounding is simulated, as in QAT.
//
// Prune first, then quantize: run it on the model about to be quantized (a recipe's
// report.quant_sensitivity_bits scans the final float model, before PTQ or QAT).
#include "libprune/graph/trace.h"
#include "libprune/quant/quantize.h"

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace libprune::quant {

struct QuantSensitivityRow {
  std::string unit;            // Report::quantized's line: "layer1.0.conv1 + layer1.0.bn1 + layer1.0.relu1"
  std::vector<double> metric;  // the metric with only this unit quantised, at each bit width
};

struct QuantSensitivity {
  std::vector<int64_t> bits;
  double baseline = 0;               // the metric of the float model
  std::vector<double> all;           // every unit quantised at once, at each bit width
  std::vector<QuantSensitivityRow> rows;  // every unit, in call order
  std::vector<std::string> skipped;  // layers that stay float, with the reason (Report::skipped)
  double seconds = 0;

  // {"bits", "baseline", "all", "seconds", "rows": [{"unit", "metric"}], "skipped"}
  std::string to_json() const;
  // A table: a line per unit, the metric's drop from the baseline at each bit width.
  std::string to_string() const;
};

// The problem with scan bit widths ("" when none): at least one, each in 2..8, none twice.
std::string check_sensitivity_bits(const std::string& name, const std::vector<int64_t>& bits);

// Scans `model`, which must not be prepared or converted. For each bit width: installs quantisers
// as prepare(model, forward, options.bits(b)) does, puts the model in calibration_mode and calls
// `calibrate` (which runs calibration batches through the model), freezes the ranges, then calls
// `evaluate` (the metric of the model as it is, e.g. top-1 on held-out data; it should put the model
// in eval mode) once per unit with only that unit's quantisers rounding, and once with all of them.
// Afterwards the quantisers are gone and every layer has its own train flag back (a frozen batch
// norm in a training model stays frozen), its parameters and buffers untouched (calibration runs
// in eval mode). `options` are prepare's: the observer is the
// calibration's (min_max by default: every value seen counts; mse suits 4 bits); learnable scales and
// the simulated fold are not used (nothing trains). Throws naming the problem, with the model as
// it was, for bad bit widths, a missing callback, a prepared or converted model, or a quantiser
// that calibration did not reach (named).
QuantSensitivity sensitivity(torch::nn::Module& model, const graph::Forward& forward,
                             const std::function<void()>& calibrate, const std::function<double()>& evaluate,
                             const std::vector<int64_t>& bits = {8, 4},
                             const QuantOptions& options = QuantOptions().observer(Observer::min_max));

// keep_float's names for mixed precision: the first layer of each of the `count` units whose metric
// at `bits` is lowest (ties in call order), from a scan's to_json() (C++'s or Python's; the metric
// is one where higher is better, as top-1 or agreement). Throws naming the problem when the scan has
// no `bits` column or fewer than `count` units.
std::vector<std::string> worst_units(const std::string& scan_json, int64_t bits, int64_t count);

}  // namespace libprune::quant
