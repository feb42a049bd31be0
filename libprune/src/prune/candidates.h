#pragma once
// The pruner's candidates and the plan that cuts them, shared by ratio cuts (pruner.cpp) and
// chosen units (remove_units.cpp).
#include "libprune/graph/dependency_graph.h"
#include "libprune/layers/plan.h"
#include "libprune/prune/options.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <string>
#include <vector>

namespace libprune::prune::detail {

// A group the plan may cut: its units' scores, the size ratios count against, its ratio, and the
// units it keeps.
struct Candidate {
  const graph::Group* group;
  std::vector<double> scores;
  int64_t original = 0;
  double ratio = 0;
  int64_t keep = 0;
  bool overridden = false;  // an override names it: cut at its own ratio, outside the global ranking
  bool floored = false;     // the ratio asked for more than min_channels / max_ratio let it lose
  std::vector<std::string> modules;  // the modules whose outputs it cuts
};

// A group's scores divided by their mean (all 0 when the mean is not positive): the scale on which
// groups compete in global ranking and budgets, and on which plans report the importance kept.
inline std::vector<double> normalised_scores(std::vector<double> s) {
  const double mean = std::accumulate(s.begin(), s.end(), 0.0) / static_cast<double>(std::max<size_t>(1, s.size()));
  for (auto& v : s) v = mean > 0 ? v / mean : 0.0;
  return s;
}

// Units to keep of a group that had `original` units, after removing `remove_fraction` of them
// (round_to and min_channels applied).
int64_t keep_count(int64_t original, double remove_fraction, const PrunerOptions& o);

// The plan that removes each candidate's lowest-scoring units down to its keep count (ties keep
// their order), with a note for every floored candidate.
layers::PruningPlan cuts_of(const std::vector<Candidate>& candidates, const std::map<std::string, torch::Tensor>& tensors);

}  // namespace libprune::prune::detail
