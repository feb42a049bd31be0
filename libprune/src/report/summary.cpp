#include "summary.h"

#include <cstdio>
#include <iostream>

namespace libprune::report::detail {

json summary(const RunInfo& info, const Comparison& comparison, const ReportOptions& options) {
  return {{"recipe", info.recipe},
          {"model", info.model},
          {"dense", comparison.dense()},
          {"pruned", comparison.pruned()},
          {"cuts", info.cuts},
          {"epochs", info.epochs},
          {"threads", torch::get_num_threads()},
          {"latency_batchnorm_folded", options.fold_batchnorm()},
          {"seconds", info.seconds}};
}

namespace {

void row(const json& dense, const json& pruned, const char* label, const std::string& key, double scale, const char* fmt) {
  const double a = dense.value(key, 0.0) * scale, b = pruned.value(key, 0.0) * scale;
  char line[200];
  const std::string f = std::string("%-16s ") + fmt + "  " + fmt + "  %8.2fx\n";
  std::snprintf(line, sizeof line, f.c_str(), label, a, b, b != 0 ? a / b : 0.0);
  std::cout << line;
}

}  // namespace

void print_table(const RunInfo& info, const Comparison& comparison, const ReportOptions& options,
                 const std::string& summary_path) {
  const json& dense = comparison.dense();
  const json& pruned = comparison.pruned();
  std::cout << "\n" << info.recipe << " (" << info.model << ")\n";
  std::printf("%-16s %12s  %12s  %9s\n", "", "dense", "pruned", "ratio");
  std::cout << std::flush;
  row(dense, pruned, "params (M)", "params", 1e-6, "%12.3f");
  row(dense, pruned, "MACs (M)", "macs", 1e-6, "%12.2f");
  row(dense, pruned, "file size (MB)", "size_bytes", 1e-6, "%12.3f");
  for (const int64_t b : options.latency_batches()) {
    row(dense, pruned, ("latency b" + std::to_string(b) + " (ms)").c_str(), "latency_ms_b" + std::to_string(b), 1, "%12.2f");
  }
  std::printf("%-16s %12.2f  %12.2f  %+8.2f pt\n", "top-1 (%)", dense.value("accuracy", 0.0), pruned.value("accuracy", 0.0),
              pruned.value("accuracy", 0.0) - dense.value("accuracy", 0.0));
  for (const int64_t b : options.latency_batches()) {
    const std::string n = std::to_string(b);
    auto how = [&](const json& side) {
      return side.value("latency_format_b" + n, std::string("?")) +
             (info.cpu ? ", " + std::to_string(side.value("latency_threads_b" + n, 0)) + " thread(s)" : std::string());
    };
    std::cout << "latency b" << n << " timed as: dense " << how(dense) << "; pruned " << how(pruned) << "\n";
  }
  std::cout << "summary: " << summary_path << std::endl;
}

}  // namespace libprune::report::detail
