// The quantization sensitivity scan (quant/sensitivity.h).
#include "libprune/quant/sensitivity.h"

#include "placement.h"

#include "libprune/nn/eval_mode.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>
#include <sstream>

namespace libprune::quant {

std::string check_sensitivity_bits(const std::string& name, const std::vector<int64_t>& bits) {
  if (bits.empty()) return name + " is empty. Fix: give the bit widths to scan, e.g. [8, 4]";
  std::set<int64_t> seen;
  for (size_t i = 0; i < bits.size(); ++i) {
    if (bits[i] < 2 || bits[i] > 8) {
      return name + "." + std::to_string(i) + " is " + std::to_string(bits[i]) +
             " bits; the quantisers simulate 2 to 8. Fix: e.g. [8, 4]";
    }
    if (!seen.insert(bits[i]).second) {
      return name + "." + std::to_string(i) + " repeats " + std::to_string(bits[i]) + " bits. Fix: give each width once";
    }
  }
  return {};
}

namespace {

using detail::Placement;
using detail::Unit;

// The quantisers that round unit u alone: its weight's, its float inputs', its output's.
std::vector<std::shared_ptr<FakeQuantizeImpl>> quantisers_of(const Placement& p, const Unit& u) {
  std::vector<std::shared_ptr<FakeQuantizeImpl>> out;
  const auto add = [&](const torch::nn::Module& layer, const std::string& name) {
    if (auto fq = std::dynamic_pointer_cast<FakeQuantizeImpl>(nn::extension(layer, name))) out.push_back(fq);
  };
  const auto& layer = *p.calls[u.layer].module;
  add(layer, kWeightFakeQuant);
  for (size_t k = 0; k < u.observe_input.size(); ++k) add(layer, input_fake_quant_name(static_cast<int>(k)));
  add(*p.calls[u.end].module, kOutputFakeQuant);
  return out;
}

// Calibrates the installed quantisers, then freezes them with rounding off; throws naming the
// first quantiser calibration did not reach.
void calibrate_frozen(torch::nn::Module& model, const std::function<void()>& calibrate, int64_t bits) {
  calibration_mode(model);
  {
    torch::NoGradGuard no_grad;
    calibrate();
  }
  for (auto& [name, fq] : detail::installed_of<FakeQuantizeImpl>(model)) {
    TORCH_CHECK_VALUE(fq->observed(), "quant::sensitivity: at ", bits, " bits, ", name,
                      " saw no finite value during calibration. Fix: calibrate must run batches through the model "
                      "(model.forward on held-out or training inputs) that reach every quantised layer");
    fq->calculate_qparams();
    fq->enable_observer(false);
    fq->enable_fake_quant(false);
  }
}

}  // namespace

QuantSensitivity sensitivity(torch::nn::Module& model, const graph::Forward& forward,
                             const std::function<void()>& calibrate, const std::function<double()>& evaluate,
                             const std::vector<int64_t>& bits, const QuantOptions& options) {
  const auto problem = check_sensitivity_bits("quant::sensitivity bits", bits);
  TORCH_CHECK_VALUE(problem.empty(), problem);
  TORCH_CHECK_VALUE(static_cast<bool>(calibrate), "quant::sensitivity: no calibrate function. Fix: pass one that runs "
                    "calibration batches through the model");
  TORCH_CHECK_VALUE(static_cast<bool>(evaluate), "quant::sensitivity: no evaluate function. Fix: pass one that returns "
                    "the metric (e.g. top-1 on held-out data) of the model as it is when called");
  TORCH_CHECK_VALUE(!is_prepared(model) && !is_converted(model), "quant::sensitivity: the model already has ",
                    is_converted(model) ? "int8 kernels" : "fake quantisers",
                    ". Fix: scan the float model, before quant::prepare");
  options::validate<QuantOptions>(QuantOptions::specs(), options, "quant::sensitivity: ", nullptr);
  const auto started = std::chrono::steady_clock::now();
  nn::EvalModeGuard modes(model);  // every layer's own train flag comes back, also when evaluate throws
  const auto p = detail::place(model, forward, options.keep_float());
  QuantSensitivity out;
  out.bits = bits;
  out.skipped = p.report.skipped;
  out.baseline = evaluate();
  for (const auto& line : p.report.quantized) out.rows.push_back({line, {}});
  for (const int64_t b : bits) {
    // Learned scales need training, a simulated fold equals the plain one in eval mode: neither here.
    auto installs = detail::install_fake_quant(p, QuantOptions(options).bits(b).learnable_scales(false).simulated_fold(false));
    try {
      calibrate_frozen(model, calibrate, b);
      for (size_t i = 0; i < p.units.size(); ++i) {
        const auto own = quantisers_of(p, p.units[i]);
        for (const auto& fq : own) fq->enable_fake_quant(true);
        out.rows[i].metric.push_back(evaluate());
        for (const auto& fq : own) fq->enable_fake_quant(false);
      }
      enable_fake_quant(model, true);
      out.all.push_back(evaluate());
    } catch (...) {
      installs.undo();
      throw;
    }
    installs.undo();
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return out;
}

std::string QuantSensitivity::to_json() const {
  nlohmann::json rows_json = nlohmann::json::array();
  for (const auto& r : rows) rows_json.push_back({{"unit", r.unit}, {"metric", r.metric}});
  return nlohmann::json({{"bits", bits},
                         {"baseline", baseline},
                         {"all", all},
                         {"seconds", seconds},
                         {"rows", rows_json},
                         {"skipped", skipped}})
      .dump();
}

std::string QuantSensitivity::to_string() const {
  std::ostringstream s;
  char cell[96];
  std::snprintf(cell, sizeof cell, "%-48s", "unit (metric drop from float)");
  s << cell;
  for (const int64_t b : bits) {
    std::snprintf(cell, sizeof cell, " %7lld-bit", static_cast<long long>(b));
    s << cell;
  }
  std::snprintf(cell, sizeof cell, "\nfloat %.2f, %zu units, %.1f s\n", baseline, rows.size(), seconds);
  s << cell;
  const auto line = [&](std::string name, const std::vector<double>& metric) {
    if (name.size() > 48) name = "..." + name.substr(name.size() - 45);
    std::snprintf(cell, sizeof cell, "%-48s", name.c_str());
    s << cell;
    for (const double m : metric) {
      std::snprintf(cell, sizeof cell, " %11.2f", baseline - m);
      s << cell;
    }
    s << "\n";
  };
  for (const auto& r : rows) line(r.unit, r.metric);
  line("(every unit at once)", all);
  if (!skipped.empty()) s << skipped.size() << " layers stay float (quant::Report::skipped)\n";
  return s.str();
}

std::vector<std::string> worst_units(const std::string& scan_json, int64_t bits, int64_t count) {
  const auto scan = nlohmann::json::parse(scan_json);
  const auto widths = scan.at("bits").get<std::vector<int64_t>>();
  const auto at = std::find(widths.begin(), widths.end(), bits);
  TORCH_CHECK_VALUE(at != widths.end(), "worst_units: the scan has no ", bits, "-bit column (it scanned ",
                    c10::Join(", ", widths), "). Fix: scan at ", bits, " bits, e.g. report.quant_sensitivity_bits [8, 4]");
  const auto column = static_cast<size_t>(at - widths.begin());
  const auto& rows = scan.at("rows");
  TORCH_CHECK_VALUE(count >= 0, "worst_units: count must be 0 or more, got ", count);
  TORCH_CHECK_VALUE(count < static_cast<int64_t>(rows.size()), "worst_units: ", count, " of ", rows.size(),
                    " units; at least one must stay quantised. Fix: keep fewer float");
  std::vector<std::pair<double, size_t>> order;
  for (size_t i = 0; i < rows.size(); ++i) order.emplace_back(rows[i].at("metric").at(column).get<double>(), i);
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (int64_t k = 0; k < count; ++k) {
    const auto unit = rows[order[static_cast<size_t>(k)].second].at("unit").get<std::string>();
    out.push_back(unit.substr(0, unit.find(' ')));  // "conv1 + bn1 + relu" (C++) or "conv1 -> relu" (Python)
  }
  return out;
}

}  // namespace libprune::quant
