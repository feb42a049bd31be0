#pragma once
// Importance: one score per unit (channel, head) of a group. Each criterion gives a value per index
// of each member tensor; a unit sums its indices within a member, and the members' values reduce
// (sum, mean, max or first) to the unit's score.
#include "libprune/graph/dependency_graph.h"

#include <map>
#include <string>
#include <vector>

namespace libprune::importance {

enum class Kind {
  L1,       // sum |w|
  L2,       // sqrt of the reduced sum of w^2
  BnScale,  // |gamma| of the group's norm layers (network slimming); groups without one use L1
  Taylor,   // first order: |w * dL/dw|, from accumulated values or the current .grad
  Fpgm,     // distance of each filter to the others (geometric median); needs a weight cut along dim 0
  Lamp,     // w^2 over the sum of w^2 of every index at least as large (LAMP), per member
  Random    // seeded uniform scores (a baseline)
};
enum class Reduction { Sum, Mean, Max, First };

// "l1", "l2", "bn_scale", "taylor", "fpgm", "lamp", "random"; anything else throws naming the value
// and the choices.
Kind parse(const std::string& name);
const char* to_string(Kind kind);
// "sum", "mean", "max", "first".
Reduction parse_reduction(const std::string& name);
const char* to_string(Reduction reduction);

struct ImportanceOptions {
  ImportanceOptions(Kind kind = Kind::L1) : kind_(kind) {}  // NOLINT: a Kind converts on purpose
  TORCH_ARG(Kind, kind);
  TORCH_ARG(Reduction, reduction) = Reduction::Sum;
  // Divide a group's scores by their sum (so groups of different scale compare).
  TORCH_ARG(bool, normalize) = false;
  TORCH_ARG(uint64_t, seed) = 0;
};

// Accumulated |w * dL/dw| per parameter name (shaped like the parameter), for Taylor.
using Gradients = std::map<std::string, torch::Tensor>;

// One score per unit of `group`. Buffers (running statistics) never score. Taylor uses
// `accumulated` where it holds the parameter, else the parameter's .grad; with neither it throws
// naming the parameter and the fix.
std::vector<double> score(const graph::Group& group, const std::map<std::string, torch::Tensor>& params,
                          const ImportanceOptions& options, const Gradients* accumulated = nullptr);

// Adds |w * w.grad| of every parameter with a gradient to `into` (a Taylor accumulator).
void accumulate_taylor(const std::vector<std::pair<std::string, torch::Tensor>>& params, Gradients& into);

}  // namespace libprune::importance
