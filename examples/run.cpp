// libprune-run: runs a recipe (configs/*.json).
//   build/libprune-run configs/fashion_mnist_resnet20_filters50.json [--resume] [--set key=value ...]
//   build/libprune-run --print-options   (every recipe key, its default and meaning: docs/recipes.md's table)
//   build/libprune-run --nproc-per-node 2 RECIPE.json   (2 data-parallel processes; or start it under torchrun)
//   build/libprune-run RECIPE.json --goal latency_b32=0.25 --max-drop 0.5   (report.goal: choose among the rows)
#include "libprune/dist/launch.h"
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"
#include "libprune/train/trainer.h"

#include <c10/util/Exception.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

namespace {
void on_stop(int sig) {
  libprune::train::Trainer::request_stop();
  std::signal(sig, SIG_DFL);
}
}  // namespace

int main(int argc, char** argv) {
  libprune::recipe::RunOptions options;
  std::string recipe;
  int nproc = 1;
  std::vector<std::string> rank_args;  // what each rank gets: everything but --nproc-per-node
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc-per-node" || a.rfind("--nproc-per-node=", 0) == 0) {
      const std::string v = a.size() > 16 ? a.substr(17) : (i + 1 < argc ? argv[++i] : "");
      char* end = nullptr;
      nproc = static_cast<int>(std::strtol(v.c_str(), &end, 10));
      if (v.empty() || *end != '\0' || nproc < 1) {
        std::cerr << "libprune-run: --nproc-per-node needs a number of processes >= 1, got \"" << v << "\"\n";
        return 2;
      }
      continue;
    }
    rank_args.push_back(a);
    if (a == "--resume") {
      options.resume = true;
    } else if (a == "--set" && i + 1 < argc) {
      options.sets.emplace_back(argv[++i]);
      rank_args.push_back(argv[i]);
    } else if (a.rfind("--set=", 0) == 0) {
      options.sets.emplace_back(a.substr(6));
    } else if ((a == "--goal" || a == "--max-drop") && i + 1 < argc) {
      // Recipe keys: report.goal and report.max_drop.
      options.sets.emplace_back((a == "--goal" ? "report.goal=" : "report.max_drop=") + std::string(argv[++i]));
      rank_args.push_back(argv[i]);
    } else if (a == "-h" || a == "--help") {
      std::cout << "usage: libprune-run RECIPE.json [--resume] [--set key.path=value ...] [--nproc-per-node N]\n"
                   "                    [--goal latency_b32=0.25 [--max-drop 0.5]]\n"
                   "       libprune-run --print-options\n";
      return 0;
    } else if (a == "--print-options") {
      std::cout << libprune::recipe::options_markdown();
      return 0;
    } else if (recipe.empty() && a.rfind("--", 0) != 0) {
      recipe = a;
    } else {
      std::cerr << "libprune-run: unexpected argument \"" << a << "\". Fix: libprune-run RECIPE.json [--resume] [--set k=v]\n";
      return 2;
    }
  }
  if (recipe.empty()) {
    std::cerr << "libprune-run: no recipe given. Fix: libprune-run configs/fashion_mnist_resnet20_filters50.json\n";
    return 2;
  }
  if (nproc > 1) {
    // This process only launches: N ranks of this same program, each with its part of every batch.
    try {
      const auto r = libprune::recipe::read(recipe, options.sets);
      const auto grace = std::chrono::milliseconds(static_cast<int64_t>(r.training.dist_timeout_s() * 1000) + 30000);
      return libprune::dist::launch_local(nproc, std::filesystem::read_symlink("/proc/self/exe").string(), rank_args,
                                          grace);
    } catch (const c10::Error& e) {
      std::cerr << "libprune-run: " << e.what_without_backtrace() << "\n";
      return 1;
    }
  }
  // The first SIGINT stops after the current batch (the last checkpoint stays valid); a second kills.
  std::signal(SIGINT, on_stop);
  std::signal(SIGTERM, on_stop);  // what launchers (ours, torchrun) send to stop a job
  try {
    const auto result = libprune::recipe::run(recipe, options);
    return result.completed ? 0 : 130;
  } catch (const c10::Error& e) {
    std::cerr << "libprune-run: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "libprune-run: " << e.what() << "\n";
  }
  return 1;
}
