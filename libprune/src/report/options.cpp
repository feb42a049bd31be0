#include "libprune/report/options.h"

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

LIBPRUNE_DEFINE_OPTION_SPECS(ReportOptions, LIBPRUNE_REPORT_OPTIONS)

std::string ReportOptions::problem(std::string* key) const {
  return options::first_problem<ReportOptions>(specs(), *this, {}, key);
}

std::vector<double> ReportOptions::sensitivity_ratios() const {
  std::vector<double> ratios;
  if (sensitivity_step() <= 0) return ratios;
  for (int k = 1; k * sensitivity_step() < 1 - 1e-9; ++k) ratios.push_back(k * sensitivity_step());
  return ratios;
}

}  // namespace libprune::report
