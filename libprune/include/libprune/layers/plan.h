#pragma once
// A pruning plan is data: the indices kept along each cut tensor dimension. Applying the same
// recorded plans to a freshly built model reproduces the pruned architecture.
#include <cstdint>
#include <string>
#include <vector>

namespace libprune::layers {

struct TensorCut {
  std::string tensor;     // parameter or buffer name
  int64_t dim = 0;
  int64_t original_size = 0;  // size along dim before the cut, checked on replay
  std::vector<int64_t> keep;  // sorted, unique indices in [0, original_size)
};

struct PruningPlan {
  std::vector<TensorCut> cuts;
  // Units removed per group, for reports: group name -> (before, after).
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> groups;
  // Where the plan cut less than asked, and why (a ratio that would empty a group keeps
  // min_channels of it: every attention layer keeps a head).
  std::vector<std::string> notes;
  // The share of the scored groups' importance the plan keeps, in [0, 1] (each group's scores
  // divided by their mean, so every group weighs by its width; -1: no group was scored). The same
  // measure for a ratio and a budget, so the two can be compared at equal cost. Of the widths the
  // plan started from: a schedule's later steps report their own step's share.
  double importance_kept = -1;

  bool empty() const { return cuts.empty(); }
  std::string to_json() const;
  // Throws with the JSON path and the fix on malformed input.
  static PruningPlan from_json(const std::string& text);
};

}  // namespace libprune::layers
