#pragma once
// The plans applied so far in a run, as the pruning stages, checkpoints and resume share them.
#include "libprune/layers/plan.h"

#include <string>
#include <vector>

namespace libprune::train {

// Plans applied so far, shared by the pruning stages and the checkpoints.
using PlanHistory = std::vector<layers::PruningPlan>;
std::string plans_to_json(const PlanHistory& plans);
PlanHistory plans_from_json(const std::string& json);

}  // namespace libprune::train
