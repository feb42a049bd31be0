// libprune-run: runs a recipe (configs/*.json).
//   build/libprune-run configs/fashion_mnist_resnet20_filters50.json [--resume] [--set key=value ...]
//   build/libprune-run --print-options   (every recipe key, its default and meaning: docs/recipes.md's table)
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"
#include "libprune/train/trainer.h"

#include <c10/util/Exception.h>

#include <csignal>
#include <cstring>
#include <iostream>

namespace {
void on_sigint(int) {
  libprune::train::Trainer::request_stop();
  std::signal(SIGINT, SIG_DFL);
}
}  // namespace

int main(int argc, char** argv) {
  libprune::recipe::RunOptions options;
  std::string recipe;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--resume") {
      options.resume = true;
    } else if (a == "--set" && i + 1 < argc) {
      options.sets.emplace_back(argv[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      options.sets.emplace_back(a.substr(6));
    } else if (a == "-h" || a == "--help") {
      std::cout << "usage: libprune-run RECIPE.json [--resume] [--set key.path=value ...]\n"
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
  // The first SIGINT stops after the current batch (the last checkpoint stays valid); a second kills.
  std::signal(SIGINT, on_sigint);
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
