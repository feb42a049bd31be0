#pragma once
// Budgeted pruning (PrunerOptions::target): each free group's kept count chosen so that the model's
// cost (latency from a measured table, MACs or parameters of its conv and linear layers) meets a
// budget while keeping as much importance as possible.
#include "candidates.h"
#include "libprune/graph/trace.h"
#include "libprune/measure/latency_table.h"
#include "libprune/prune/options.h"
#include "libprune/prune/sensitivity.h"

#include <string>
#include <vector>

namespace libprune::prune::detail {

// The budget kinds a target may name, and what each value means.
const std::vector<std::pair<std::string, std::string>>& budget_kinds();

// The problem with a target ("" when none): one kind from budget_kinds(), a value in range.
std::string target_problem(const options::RatioMap& target);

// Sets every candidate's keep so that the cost meets the target at `progress` (0: the dense
// model's cost, 1: the target; schedules step it) and returns notes for the plan: the budget and the
// predicted cost (the plan reports the importance kept). Greedy, as in NetAdapt and HALP's knapsack relaxation: the
// cut with the least importance lost per unit of cost saved goes first, each cut a step down the
// group's sampled widths (latency) or round_to units, with coupled layers costed at their
// neighbours' current widths. Throws, changing nothing, when no cut reaches the budget, with the
// smallest reachable cost. `measured` (predicted ms, measured ms) of the model as it is, when given
// ({0, 0}: none), calibrates the latency model: the budget in predicted ms is the measured budget
// times predicted / measured there. Under Allocation::sensitivity the importance a cut loses is
// `scan`'s interpolated metric drop for its group (Sensitivity::predicted_drop), which must then be given.
std::vector<std::string> keep_within_budget(std::vector<Candidate>& candidates, const graph::Trace& trace, const measure::LatencyTable* table,
                                            const PrunerOptions& options, double progress,
                                            std::pair<double, double> measured = {0, 0}, const Sensitivity* scan = nullptr);


}  // namespace libprune::prune::detail
