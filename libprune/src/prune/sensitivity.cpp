// The sensitivity scan (prune/sensitivity.h): Pruner::sensitivity and the table's forms.
#include "libprune/layers/exact.h"
#include "libprune/prune/pruner.h"

#include "candidates.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

namespace libprune::prune {

std::string check_sensitivity_ratios(const std::string& name, const std::vector<double>& ratios) {
  if (ratios.empty()) return name + " is empty. Fix: give the ratios to scan, e.g. [0.25, 0.5, 0.75]";
  for (size_t i = 0; i < ratios.size(); ++i) {
    if (!(ratios[i] > 0 && ratios[i] < 1)) {
      return name + "." + std::to_string(i) + " must be in (0, 1), got " + std::to_string(ratios[i]) +
             ". Fix: fractions of each group's units to remove, e.g. [0.25, 0.5, 0.75]";
    }
  }
  return {};
}

Sensitivity Pruner::sensitivity(const std::function<double()>& evaluate, const std::vector<double>& ratios) const {
  const auto problem = check_sensitivity_ratios("sensitivity ratios", ratios);
  TORCH_CHECK_VALUE(problem.empty(), problem);
  TORCH_CHECK_VALUE(static_cast<bool>(evaluate), "sensitivity: no evaluate function. Fix: pass one that returns the "
                    "metric (e.g. top-1 on held-out data) of the model as it is when called");
  const auto started = std::chrono::steady_clock::now();
  const layers::ModelTensors tensors(*model_);
  const auto traced = trace(tensors);
  const auto g = build_graph(traced, tensors);
  const auto candidates = candidates_of(g, tensors, {});
  const auto by_name = tensors.by_name();
  Sensitivity out;
  out.ratios = ratios;
  out.baseline = evaluate();
  for (const auto& c : candidates) {
    if (c.group->normalised) {
      out.skipped.push_back(c.group->name());
      continue;
    }
    SensitivityRow row{c.group->name(), c.modules, c.group->size(), {}, {}};
    for (const double ratio : ratios) {
      auto cut = c;
      cut.keep = std::min(c.group->size(), detail::keep_count(c.group->size(), ratio, options_));
      row.kept.push_back(cut.keep);
      layers::Overwrites masked;
      masked.mask(tensors, detail::cuts_of({cut}, by_name));
      row.metric.push_back(evaluate());
    }
    out.rows.push_back(std::move(row));
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return out;
}

std::string Sensitivity::to_json() const {
  nlohmann::json rows_json = nlohmann::json::array();
  for (const auto& r : rows) {
    rows_json.push_back({{"group", r.group}, {"modules", r.modules}, {"size", r.size}, {"kept", r.kept}, {"metric", r.metric}});
  }
  return nlohmann::json(
             {{"ratios", ratios}, {"baseline", baseline}, {"seconds", seconds}, {"rows", rows_json}, {"skipped", skipped}})
      .dump();
}

Sensitivity Sensitivity::from_json(const std::string& text) {
  Sensitivity out;
  try {
    const auto j = nlohmann::json::parse(text);
    out.ratios = j.at("ratios").get<std::vector<double>>();
    out.baseline = j.at("baseline").get<double>();
    out.seconds = j.value("seconds", 0.0);
    out.skipped = j.value("skipped", std::vector<std::string>{});
    for (const auto& r : j.at("rows")) {
      SensitivityRow row{r.at("group").get<std::string>(), r.at("modules").get<std::vector<std::string>>(),
                         r.at("size").get<int64_t>(), r.at("kept").get<std::vector<int64_t>>(),
                         r.at("metric").get<std::vector<double>>()};
      TORCH_CHECK_VALUE(row.metric.size() == out.ratios.size() && row.kept.size() == out.ratios.size(), "group ",
                        row.group, " has ", row.metric.size(), " metrics and ", row.kept.size(), " kept counts for ",
                        out.ratios.size(), " ratios");
      for (const int64_t k : row.kept) {
        TORCH_CHECK_VALUE(k >= 0 && k <= row.size, "group ", row.group, " keeps ", k, " of its ", row.size, " units");
      }
      out.rows.push_back(std::move(row));
    }
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK_VALUE(false, "sensitivity scan JSON: ", e.what(), ". Fix: pass what Sensitivity::to_json (or Python's "
                      "libprune.sensitivity) wrote");
  }
  return out;
}

const SensitivityRow* Sensitivity::row(const std::string& group) const {
  for (const auto& r : rows) {
    if (r.group == group) return &r;
  }
  return nullptr;
}

double Sensitivity::predicted_drop(const SensitivityRow& row, double removed) const {
  const double n = static_cast<double>(std::max<int64_t>(1, row.size));
  // The scanned points by the fraction really cut (kept counts are rounded), in order: ratios may
  // come in any order.
  std::vector<std::pair<double, double>> points;
  for (size_t i = 0; i < row.metric.size(); ++i) {
    const double x = row.kept.size() == row.metric.size() ? (n - static_cast<double>(row.kept[i])) / n : ratios.at(i);
    points.emplace_back(x, baseline - row.metric[i]);
  }
  std::sort(points.begin(), points.end());
  const double f = removed / n;
  double x0 = 0, y0 = 0, slope = 0;
  for (const auto& [x, drop] : points) {
    const double y = std::max(y0, drop);  // never falls: a point above the baseline is noise
    if (x <= x0 + 1e-12) {
      y0 = y;
      continue;
    }
    slope = (y - y0) / (x - x0);
    if (f <= x) return y0 + slope * (f - x0);
    x0 = x, y0 = y;
  }
  // Beyond the last point: at least the average slope so far, so a noisy flat last segment does not
  // make cutting to the floor free.
  return y0 + std::max(slope, x0 > 0 ? y0 / x0 : 0.0) * (f - x0);
}

std::string Sensitivity::to_string() const {
  std::ostringstream s;
  char cell[64];
  std::snprintf(cell, sizeof cell, "%-40s %6s", "group (metric drop from baseline)", "units");
  s << cell;
  for (const double r : ratios) {
    std::snprintf(cell, sizeof cell, " %8s", ("-" + std::to_string(static_cast<int>(r * 100 + 0.5)) + "%").c_str());
    s << cell;
  }
  std::snprintf(cell, sizeof cell, "\nbaseline %.2f, %zu groups, %.1f s\n", baseline, rows.size(), seconds);
  s << cell;
  if (!skipped.empty()) s << skipped.size() << " groups a norm normalises across are not scanned\n";
  for (const auto& r : rows) {
    std::string name = r.modules.empty() ? r.group : r.modules.front();
    if (r.modules.size() > 1) name += " +" + std::to_string(r.modules.size() - 1);
    if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
    std::snprintf(cell, sizeof cell, "%-40s %6lld", name.c_str(), static_cast<long long>(r.size));
    s << cell;
    for (const double m : r.metric) {
      std::snprintf(cell, sizeof cell, " %8.2f", baseline - m);
      s << cell;
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace libprune::prune
