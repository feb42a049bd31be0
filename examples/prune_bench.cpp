// Benchmark: uniform 50% L2 pruning of resnet50 (fc ignored) at 1x3x224x224, the whole pipeline
// (trace, group, score, apply, verify), median of N runs on freshly built models. Prints the
// pruned parameter count against Torch-Pruning's published 6,917,640 for the same setting.
// A BERT (--model bert_base: 12 layers, 768 hidden, 12 heads, random weights) gets 30% of its
// heads cut by global L1 ranking, the FFN and the pooler kept (issue 13's target: 2 s), traced on an
// example of --tokens tokens (default 32).
//
//   build/libprune-prune-bench [--runs 5] [--model resnet50|bert_base] [--tokens 32]
#include "libprune/libprune.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  int runs = 5;
  std::string name = "resnet50";
  bool retain = true;
  int tokens = 32;  // BERT's example input: the graph does not depend on its length
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--return-freed-memory") retain = false;
    else if (k == "--runs" && i + 1 < argc) runs = std::stoi(argv[++i]);
    else if (k == "--model" && i + 1 < argc) name = argv[++i];
    else if (k == "--tokens" && i + 1 < argc) tokens = std::stoi(argv[++i]);
  }
  try {
    torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    // As a training binary would (the Trainer does it): copies of the weights are freed and made
    // again on every run, and faulting their pages back in doubled the time on this VM.
    if (retain) retain = libprune::retain_freed_memory();
    const bool bert = name.rfind("bert", 0) == 0;
    const auto x = bert ? torch::randint(1, 8000, {1, tokens}, torch::kLong) : torch::randn({1, 3, 224, 224});
    auto options = libprune::prune::PrunerOptions().ratio(0.5).importance("l2").ignored_layers({"fc"});
    if (bert) {
      options = libprune::prune::PrunerOptions().ratio(0.3).importance("l1").global_pruning(true).ignored_layers(
          {"classifier"}).overrides({{".*intermediate\\.dense", 0.0}, {".*pooler\\.dense", 0.0}});
    }
    auto heads = [](const libprune::models::ModelPtr& m) {
      int64_t n = 0;
      if (const auto b = std::dynamic_pointer_cast<libprune::models::BertForSequenceClassificationImpl>(m)) {
        for (const auto h : b->heads_per_layer()) n += h;
      }
      return n;
    };
    int64_t heads_before = 0, heads_after = 0;
    std::vector<double> seconds;
    libprune::measure::OpCount before, after;
    for (int r = 0; r < runs; ++r) {
      auto model = libprune::models::create(name, libprune::models::ModelOptions().vocab_size(8000));
      if (r == 0) before = libprune::measure::count_ops(model, x), heads_before = heads(model);
      libprune::prune::Pruner pruner(model, [model, x] { return std::vector<torch::Tensor>{model->forward(x)}; }, options);
      const auto t0 = std::chrono::steady_clock::now();
      pruner.step();
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      if (r == 0) after = libprune::measure::count_ops(model, x), heads_after = heads(model);
    }
    std::sort(seconds.begin(), seconds.end());
    const double reference_params = 6917640.0;
    std::printf("%s, %s, %d threads, freed memory %s\n", name.c_str(),
                bert ? "30% of heads, global L1" : "50% L2, fc ignored", torch::get_num_threads(),
                retain ? "retained" : "returned to the OS");
    if (bert) {
      std::printf("example input: %d tokens\n", tokens);
      std::printf("heads %lld -> %lld, params %lld -> %lld\n", static_cast<long long>(heads_before),
                  static_cast<long long>(heads_after), static_cast<long long>(before.params),
                  static_cast<long long>(after.params));
    } else {
      std::printf("params %lld -> %lld (Torch-Pruning reference 6,917,640: ratio %.4f)\n",
                  static_cast<long long>(before.params), static_cast<long long>(after.params),
                  after.params / reference_params);
    }
    std::printf("conv+linear MACs %lld -> %lld (%.2fx fewer)\n", static_cast<long long>(before.macs),
                static_cast<long long>(after.macs), static_cast<double>(before.macs) / after.macs);
    std::printf("prune time (trace, group, score, apply, verify): median %.3f s of %d runs, min %.3f s, max %.3f s\n",
                seconds[seconds.size() / 2], runs, seconds.front(), seconds.back());
    if (bert) std::printf("against the 2 s target: %.2fx of it\n", seconds[seconds.size() / 2] / 2.0);
    return 0;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
  }
  return 1;
}
