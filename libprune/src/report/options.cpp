#include "libprune/report/options.h"

#include "goal.h"

#include "libprune/quant/sensitivity.h"

#include <algorithm>

namespace libprune::report {

std::string check_batches(const std::string& name, const Batches& batches) {
  for (size_t i = 0; i < batches.size(); ++i) {
    if (batches[i] < 1) {
      return name + "." + std::to_string(i) + " must be >= 1, got " + std::to_string(batches[i]) +
             ". Fix: batch sizes to time, e.g. [1, 32]";
    }
  }
  return {};
}

std::string check_quant_bits(const std::string& name, const Batches& bits) {
  return bits.empty() ? std::string() : quant::check_sensitivity_bits(name, bits);
}

std::string check_goal(const std::string& name, const std::string& goal) {
  if (goal.empty()) return {};
  try {
    detail::parse_goal(goal);
  } catch (const c10::Error& e) {
    return name + " " + e.what_without_backtrace();
  }
  return {};
}

LIBPRUNE_DEFINE_OPTION_SPECS(ReportOptions, LIBPRUNE_REPORT_OPTIONS)

std::string ReportOptions::problem(std::string* key) const {
  auto problem = options::first_problem<ReportOptions>(specs(), *this, {}, key);
  if (!problem.empty() || goal().empty()) return problem;
  const auto batch = detail::parse_goal(goal()).batch;
  if (std::find(latency_batches().begin(), latency_batches().end(), batch) != latency_batches().end()) return {};
  if (key) *key = "goal";
  return "goal " + goal() + " is judged at batch " + std::to_string(batch) + ", which report.latency_batches does not "
         "time. Fix: add " + std::to_string(batch) + " to report.latency_batches";
}

std::vector<double> ReportOptions::sensitivity_ratios() const {
  std::vector<double> ratios;
  if (sensitivity_step() <= 0) return ratios;
  for (int k = 1; k * sensitivity_step() < 1 - 1e-9; ++k) ratios.push_back(k * sensitivity_step());
  return ratios;
}

}  // namespace libprune::report
