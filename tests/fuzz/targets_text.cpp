// Targets for text inputs: recipes (with --set overrides) and pruning plans.
#include "fuzz.h"

#include "libprune/layers/apply.h"
#include "libprune/recipe/recipe.h"
#include "libprune/train/plan_history.h"

using namespace libprune;

// Input: the recipe text, then each --set assignment, separated by NUL bytes.
LIBPRUNE_FUZZ_TARGET(recipe) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      parts.emplace_back();
    } else {
      parts.back() += static_cast<char>(data[i]);
    }
  }
  const std::vector<std::string> sets(parts.begin() + 1, parts.end());
  fuzz::expect_clean([&] { recipe::read_text(parts.front(), "fuzz-recipe.json", sets); },
                     {"fuzz-recipe.json", "--set"});
}

// Input: one plan (an object) or a plan history (an array), applied to the tiny model and its SGD.
LIBPRUNE_FUZZ_TARGET(plan) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<layers::PruningPlan> plans;
  fuzz::expect_clean(
      [&] {
        if (!text.empty() && text.front() == '[') {
          plans = train::plans_from_json(text);
        } else {
          plans = {layers::PruningPlan::from_json(text)};
        }
      },
      {"plan"});
  auto model = fuzz::tiny_model();
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  for (const auto& plan : plans) {
    const auto before = fuzz::snapshot(*model);
    bool failed = false;
    fuzz::expect_clean(
        [&] {
          try {
            layers::apply_plan(*model, plan, &sgd);
          } catch (...) {
            failed = true;
            throw;
          }
        },
        {"plan", "optimizer"}, [&] { return fuzz::equal(*model, before); });
    if (failed) break;
  }
}
