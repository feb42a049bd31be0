#include "summary.h"

#include "goal.h"

#include <cstdio>
#include <iostream>

namespace libprune::report::detail {

json rows_json(const Comparison& comparison) {
  json rows = json::array();
  for (const auto& r : comparison.rows()) {
    json row = r.figures;
    row["row"] = r.key;
    row["label"] = r.label;
    rows.push_back(row);
  }
  return rows;
}

json summary(const RunInfo& info, const Comparison& comparison, const ReportOptions& options) {
  json out{{"recipe", info.recipe},
           {"model", info.model},
           {"cuts", info.cuts},
           {"epochs", info.epochs},
           {"threads", torch::get_num_threads()},
           {"latency_batchnorm_folded", options.fold_batchnorm()},
           {"quantization", info.quantization},
           {"seconds", info.seconds}};
  for (const auto& r : comparison.rows()) out[r.key] = r.figures;
  const json rows = rows_json(comparison);
  out["rows"] = rows;
  if (!comparison.sensitivity().is_null()) out["sensitivity"] = comparison.sensitivity();
  if (!comparison.quant_sensitivity().is_null()) out["quant_sensitivity"] = comparison.quant_sensitivity();
  if (!options.goal().empty()) out["goal"] = json::parse(judge_goal(rows.dump(), options));
  return out;
}

namespace {

std::string cell(const json& figures, const std::string& key, double scale, const char* fmt) {
  if (!figures.contains(key)) return "-";
  char text[40];
  std::snprintf(text, sizeof text, fmt, figures[key].get<double>() * scale);
  return text;
}

// One line: the label, then a column per row; `ratio` adds each row's dense/row factor.
void line(const std::vector<Row>& rows, const std::string& label, const std::string& key, double scale, const char* fmt,
          bool ratio) {
  std::printf("%-18s", label.c_str());
  const double dense = rows.front().figures.value(key, 0.0);
  for (const auto& r : rows) {
    std::string text = cell(r.figures, key, scale, fmt);
    const double v = r.figures.value(key, 0.0);
    if (ratio && &r != &rows.front() && v > 0) {
      char factor[24];
      std::snprintf(factor, sizeof factor, " %.2fx", dense / v);
      text += factor;
    }
    std::printf(" %20s", text.c_str());
  }
  std::printf("\n");
}

}  // namespace

void print_table(const RunInfo& info, const Comparison& comparison, const ReportOptions& options, const json& goal,
                 const std::string& summary_path) {
  const auto& rows = comparison.rows();
  if (rows.empty()) return;
  std::cout << "\n" << info.recipe << " (" << info.model << ")\n" << std::flush;
  std::printf("%-18s", "");
  for (const auto& r : rows) std::printf(" %20s", r.label.c_str());
  std::printf("\n");
  line(rows, "top-1 (%)", "accuracy", 1, "%.2f", false);
  line(rows, "macro-F1 (%)", "macro_f1", 1, "%.2f", false);
  line(rows, "params (M)", "params", 1e-6, "%.3f", true);
  line(rows, "MACs (M)", "macs", 1e-6, "%.2f", true);
  line(rows, "file (KiB)", "size_bytes", 1.0 / 1024, "%.0f", true);
  for (const int64_t b : options.latency_batches()) {
    line(rows, "latency b" + std::to_string(b) + " (ms)", "latency_ms_b" + std::to_string(b), 1, "%.3f", true);
  }
  std::cout << "(x: how many times smaller or faster than dense)\n";
  for (const int64_t b : options.latency_batches()) {
    const std::string n = std::to_string(b);
    std::cout << "latency b" << n << " timed as:";
    for (const auto& r : rows) {
      if (!r.figures.contains("latency_format_b" + n)) continue;
      std::cout << " " << r.label << " " << r.figures.value("latency_format_b" + n, std::string("?"));
      if (info.cpu) std::cout << "/" << r.figures.value("latency_threads_b" + n, 0) << "t";
      std::cout << ";";
    }
    std::cout << "\n";
  }
  if (goal.is_object()) {
    std::cout << "goal " << options.goal() << ", at most " << options.max_drop() << " pt lost; candidates in the "
              << "recommended order:\n";
    for (const auto& c : goal["candidates"]) {
      std::printf("  %-24s top-1 %6.2f%% (%+.2f pt)  %s\n", c["label"].get<std::string>().c_str(),
                  c["accuracy"].get<double>(), -c["drop"].get<double>(), c["verdict"].get<std::string>().c_str());
    }
    if (goal["chosen"].is_null()) {
      std::cout << "no candidate meets the goal. Fix: a deeper pruning target (pruning.N.target), QAT "
                   "(quantization.mode=qat), or a looser goal\n";
    }
  }
  std::cout << "summary: " << summary_path << std::endl;
}

}  // namespace libprune::report::detail
