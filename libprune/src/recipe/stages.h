#pragma once
// A recipe's pruning stages as pruners on schedules, and the checkpoint a run resumes from.
#include "libprune/graph/trace.h"
#include "libprune/models/model.h"
#include "libprune/prune/pruner.h"
#include "libprune/recipe/recipe.h"
#include "libprune/train/plan_history.h"
#include "libprune/train/trainer.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <vector>

namespace libprune::recipe::detail {

struct StageRun {
  std::shared_ptr<prune::Pruner> pruner;
  schedule::Schedule schedule;
  int64_t taylor_batches = 0;  // 0 unless the criterion is taylor
};

std::vector<StageRun> make_stages(const Recipe& recipe, const models::ModelPtr& model, const graph::Forward& forward);

// The ratio of the latest cut, of any stage, before `time`: what an epoch ending then trained at.
double ratio_before(const std::vector<StageRun>& stages, double time);

// Where a run picks up: the epoch after the last completed one, the best top-1 so far, and the
// report's rows measured so far (dense before the first cut, pruned when QAT started, ...).
struct Resumed {
  int64_t start_epoch = 0;
  double best_top1 = -1;
  nlohmann::json rows;
};

// Replays the plan history of the checkpoint at `last` on the model (into `plans`), calls
// `before_load` with the epoch the run resumes at (QAT installs its quantisers there), then loads
// the weights and optimizer state. Throws when the checkpoint belongs to another recipe (`recipe_id`).
Resumed resume(const std::string& last, const std::string& recipe_id, train::Trainer& trainer, train::PlanHistory& plans,
               const std::function<void(int64_t)>& before_load = {});

}  // namespace libprune::recipe::detail
