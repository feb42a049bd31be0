#pragma once
// The goal's parts and the chosen model's file (libprune/report/goal.h judges).
#include "comparison.h"
#include "libprune/report/goal.h"

#include <string>

namespace libprune::report::detail {

// "latency_b32=0.25": batch 32 at 0.25 of dense. Throws naming the fix.
struct Goal {
  int64_t batch = 0;
  double latency = 0;
};
Goal parse_goal(const std::string& text);

// Writes the row `chosen`'s model to `path`: an int8 row in the deploy file's form (int8 weights,
// scales, zero points), a float row as its state_dict. False, writing nothing, when the run did not
// keep that row's weights (a PTQ row measured for accuracy only, a row from before a resume).
bool save_chosen(const Comparison& comparison, const std::string& chosen, const std::string& path);

}  // namespace libprune::report::detail
