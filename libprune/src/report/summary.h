#pragma once
// A run's summary: <output_dir>/summary.json and the dense-against-pruned table on stdout.
#include "comparison.h"

#include <string>

namespace libprune::report::detail {

struct RunInfo {
  std::string recipe, model;
  int64_t cuts = 0, epochs = 0;
  double seconds = 0;
  bool cpu = true;
  std::string quantization = "none";  // none, ptq or qat
};

// The rows as summary.json's "rows": each row's figures with its "row" key and "label".
json rows_json(const Comparison& comparison);
json summary(const RunInfo& info, const Comparison& comparison, const ReportOptions& options);
// `goal`: the summary's "goal" object (judged once, by summary()), or null.
void print_table(const RunInfo& info, const Comparison& comparison, const ReportOptions& options, const json& goal,
                 const std::string& summary_path);

}  // namespace libprune::report::detail
