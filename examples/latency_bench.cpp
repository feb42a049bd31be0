// Benchmark of latency budgets (issue 14): builds a latency table for a zoo model at a batch size,
// prunes a fresh copy to a latency target with it and another uniformly by a ratio, and prints for
// each the latency the model predicts, the latency measured (median of --repeats measurements, with
// their spread), the prediction's error, and the MACs and latency ratios to the dense model.
// Every model is timed as deployed: eval mode, batch norms folded, channels_last, --threads threads.
//
//   build/libprune-latency-bench [--model cifar_resnet20] [--batch 32] [--size 28] [--channels 1]
//       [--target 0.4] [--uniform 0.5] [--threads 2] [--repeats 3] [--importance l2] [--layers 1]
//       [--steps 2] (budget steps: each after the first measures the model and calibrates the table)
//       [--round 16] (the latency target's widths multiples of 16)
//       [--match 1] (also the uniform ratio, found by bisection, whose measured latency is the
//       budgeted model's, with the importance each keeps: is the budget's choice better at equal speed?
//       A plan's importance is of the widths it started from, so with --steps the budget row's figure
//       is its last step's and does not compare with a one-shot cut)
#include "libprune/libprune.h"
#include "libprune/measure/latency_table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>

namespace {

using namespace libprune;

struct Measured {
  double predicted = 0, median = 0, lo = 0, hi = 0;
  int64_t macs = 0;
  double kept = -1;  // the plan's importance kept
};

// Each layer's widths and table time (--layers).
void print_layers(const models::ModelPtr& model, const torch::Tensor& x, const measure::LatencyTable& table) {
  for (const auto& s : measure::op_sites(graph::Trace::capture(*model, [&] { return std::vector<torch::Tensor>{model->forward(x)}; }))) {
    const int i = table.site_of(s.name);
    std::printf("    %-36s %5lld -> %-5lld %8.3f ms (full width %8.3f ms)\n", s.name.c_str(),
                static_cast<long long>(s.in_channels()), static_cast<long long>(s.out_channels()),
                table.op_ms(static_cast<size_t>(i), s.in_channels(), s.out_channels()),
                table.op_ms(static_cast<size_t>(i), table.sites()[static_cast<size_t>(i)].in_channels(),
                            table.sites()[static_cast<size_t>(i)].out_channels()));
  }
}

Measured measure_model(const models::ModelPtr& model, const torch::Tensor& x, const measure::LatencyTable& table,
                       int threads, int repeats) {
  Measured m;
  m.predicted = table.predict_ms(graph::Trace::capture(*model, [&] { return std::vector<torch::Tensor>{model->forward(x)}; }));
  m.macs = measure::count_ops(*model, [&] { return std::vector<torch::Tensor>{model->forward(x)}; }).macs;
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    ms.push_back(measure::deployed_ms(*model, [&](const nn::Inputs& in) { return model->forward(in.single()); },
                                      nn::Inputs{{"input", x}}, measure::LatencyTableOptions().threads(threads)));
  }
  std::sort(ms.begin(), ms.end());
  m.median = ms[ms.size() / 2];
  m.lo = ms.front();
  m.hi = ms.back();
  nn::to_memory_format(*model, torch::MemoryFormat::Contiguous);
  return m;
}

void print_row(const char* what, const Measured& m, const Measured& dense) {
  std::printf("%-28s predicted %8.3f ms  measured %8.3f ms [%.3f, %.3f]  error %+5.1f%%  MACs %.2fx  latency %.2fx  "
              "efficiency %.2f",
              what, m.predicted, m.median, m.lo, m.hi, 100 * (m.predicted - m.median) / m.median,
              static_cast<double>(dense.macs) / static_cast<double>(m.macs), dense.median / m.median,
              (dense.median / m.median) / (static_cast<double>(dense.macs) / static_cast<double>(m.macs)));
  if (m.kept >= 0) std::printf("  importance kept %.1f%%", 100 * m.kept);
  std::printf("\n");
}

// The uniform ratio whose measured latency is the budgeted model's: bisection, one measurement per
// probe, then the closest probe measured like every row (--match).
void match_uniform(const std::function<Measured(prune::PrunerOptions, const char*)>& cut, const Measured& budgeted,
                   int64_t round_to) {
  double lo = 0, hi = 0.95, best = 0, gap = 1e300;
  for (int probe = 0; probe < 7; ++probe) {
    const double r = (lo + hi) / 2;
    const double ms = cut(prune::PrunerOptions().ratio(r).round_to(round_to), nullptr).median;
    std::printf("    match probe: ratio %.3f measured %.3f ms (budgeted %.3f ms)\n", r, ms, budgeted.median);
    if (std::abs(ms - budgeted.median) < gap) gap = std::abs(ms - budgeted.median), best = r;
    (ms > budgeted.median ? lo : hi) = r;
  }
  char label[64];
  std::snprintf(label, sizeof(label), "uniform %.3f (matched)", best);
  cut(prune::PrunerOptions().ratio(best).round_to(round_to), label);
}

}  // namespace

int main(int argc, char** argv) {
  std::string name = "cifar_resnet20", importance = "l2";
  int64_t batch = 32, size = 28, channels = 1;
  double target = 0.4, uniform = 0.5;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency())), repeats = 3;
  bool layers = false, match = false;
  int steps = 1;
  int64_t round_to = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--model") name = v;
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--size") size = std::stoll(v);
    else if (k == "--channels") channels = std::stoll(v);
    else if (k == "--target") target = std::stod(v);
    else if (k == "--uniform") uniform = std::stod(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--repeats") repeats = std::stoi(v);
    else if (k == "--importance") importance = v;
    else if (k == "--layers") layers = v == "1";
    else if (k == "--steps") steps = std::stoi(v);
    else if (k == "--round") round_to = std::stoll(v);
    else if (k == "--match") match = v == "1";
    else return std::fprintf(stderr, "unknown option %s\n", k.c_str()), 2;
  }
  try {
    torch::set_num_threads(threads);
    const auto options = models::ModelOptions().num_classes(10).in_channels(channels);
    const auto fresh = [&] {
      torch::manual_seed(0);
      return models::create(name, options);
    };
    const std::string head = name.rfind("mobilenet", 0) == 0 ? "classifier.1" : "fc";
    torch::manual_seed(1);
    const auto x = torch::randn({batch, channels, size, size}), example = x.slice(0, 0, 2);
    auto dense = fresh();
    auto table = std::make_shared<measure::LatencyTable>(
        measure::LatencyTable::build(dense, x, measure::LatencyTableOptions().threads(threads)));
    std::printf("%s batch %lld, %d threads: table %s\n", name.c_str(), static_cast<long long>(batch), threads,
                table->to_string().c_str());
    const auto d = measure_model(dense, x, *table, threads, repeats);
    print_row("dense", d, d);
    // Prunes a fresh model with `o`; prints its row when `what` is given.
    const auto cut = [&](prune::PrunerOptions o, const char* what) {
      auto model = fresh();
      prune::Pruner pruner(model, [&] { return std::vector<torch::Tensor>{model->forward(example)}; },
                           o.importance(importance).ignored_layers({head}));
      pruner.set_latency_table(table);
      pruner.set_latency_probe([&] {
        return measure::deployed_ms(*model, [&](const nn::Inputs& in) { return model->forward(in.single()); },
                                    nn::Inputs{{"input", x}}, measure::LatencyTableOptions().threads(threads));
      });
      layers::PruningPlan plan;
      for (int s = 1; s <= steps; ++s) {
        pruner.set_progress(static_cast<double>(s) / steps);
        plan = pruner.step();
        if (what && s < steps && !plan.notes.empty()) std::printf("    step %d: %s\n", s, plan.notes.front().c_str());
      }
      auto m = measure_model(model, x, *table, threads, what ? repeats : 1);
      m.kept = plan.importance_kept;
      if (!what) return m;
      print_row(what, m, d);
      if (!plan.notes.empty()) std::printf("    %s\n", plan.notes.front().c_str());
      if (layers) print_layers(model, x, *table);
      return m;
    };
    char label[64];
    std::snprintf(label, sizeof(label), "latency target %.2f", target);
    const auto budgeted = cut(prune::PrunerOptions().target({{"latency", target}}).round_to(round_to), label);
    std::snprintf(label, sizeof(label), "uniform ratio %.2f", uniform);
    cut(prune::PrunerOptions().ratio(uniform), label);
    std::snprintf(label, sizeof(label), "uniform ratio %.2f round 8", uniform);
    cut(prune::PrunerOptions().ratio(uniform).round_to(8), label);
    if (match) match_uniform(cut, budgeted, round_to);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "libprune-latency-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
