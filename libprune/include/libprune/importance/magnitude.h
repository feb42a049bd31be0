#pragma once
// Magnitude importance of a group's units, summed over every member parameter of the group.
#include "libprune/graph/dependency_graph.h"

#include <map>
#include <string>
#include <vector>

namespace libprune::importance {

enum class Kind { L1, L2 };

// "l1" or "l2"; anything else throws naming the value and the choices.
Kind parse(const std::string& name);
const char* to_string(Kind kind);

// One score per unit of `group`: L1 is the sum of |w| over every index the unit owns in every
// member parameter; L2 the square root of the sum of w^2. Buffers (running statistics) do not score.
std::vector<double> score(const graph::Group& group, const std::map<std::string, torch::Tensor>& params, Kind kind);

}  // namespace libprune::importance
