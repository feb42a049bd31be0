#pragma once
// The property that defines a correct structural cut. Silence in the dense model exactly what a
// plan removes (the removed indices of every parameter it cuts set to zero: producers' rows and
// biases, normalisation scales and shifts, consumers' input columns); the pruned model's outputs
// must then equal that masked model's, to float error. A wrong index map (concat offsets, splits,
// shuffles, grouped convs, a flatten into a linear, heads) still runs with the right shapes; only
// this comparison catches it, and the pruner's verification runs it on every step.
//
// Both runs are in eval mode, without grad, and in float: every quantiser's `fake_quant_enabled`
// and `observer_enabled` buffer (libprune's and torch.ao's names) is 0 for the call, because one
// rounding flipped by float error would differ by a whole step. Running statistics and other
// companions are left as they are. Groups a LayerNorm or GroupNorm normalises across
// (graph::Group::normalised) change the kept channels' values by design: their cuts are checked
// for shapes only, and say so.
#include "libprune/graph/dependency_graph.h"
#include "libprune/layers/apply.h"

#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace libprune::layers {

// Largest |pruned - masked| allowed, as a fraction of the masked output's largest magnitude.
constexpr double kExactTolerance = 1e-4;

using Outputs = std::vector<torch::Tensor>;

// Tensors swapped for masked or zeroed copies while it lives (set_data, so every handle to them,
// Python Parameters and C++ module members alike, sees the copy) and swapped back, without a copy,
// when it ends, also on a throw. The originals are never written.
class Overwrites {
 public:
  Overwrites() = default;
  Overwrites(const Overwrites&) = delete;
  Overwrites& operator=(const Overwrites&) = delete;
  ~Overwrites();
  // Zero at every index `plan` removes from a parameter (producers' rows and biases, norms,
  // consumers' columns; companions such as running statistics are left): with a correct plan the
  // dense model then computes what the cut one would.
  void mask(const ModelTensors& tensors, const PruningPlan& plan);
  // Every quantiser's `fake_quant_enabled` and `observer_enabled` buffer set to 0.
  void quantisers_off(const ModelTensors& tensors);

 private:
  void swap(torch::Tensor t, const torch::Tensor& value);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved_;
};

// The outputs of `forward` with `model` masked by `plan` (none: as it is), in eval mode, without
// grad, quantisers off; every tensor is restored bit for bit afterwards, also when the forward throws.
Outputs exact_outputs(ModelAccess& model, const ModelTensors& tensors, const graph::Forward& forward,
                      const PruningPlan* plan = nullptr);

// How far `got` is from `expected`: the largest |got - expected| of each output over that output's
// largest finite magnitude, the worst over the outputs; +inf (with `problem` set) when their count,
// shapes or dtypes differ or `got` is not finite where `expected` is.
struct OutputDifference {
  double worst = 0;
  std::string problem;
};
OutputDifference output_difference(const Outputs& expected, const Outputs& got);

// `plan` cut into one plan per group of `graph` (the graph of the model the plan applies to, before
// the cut): each cuts only that group's removed units, along all its members. In graph order.
struct GroupCut {
  size_t group;  // index into graph.groups()
  PruningPlan plan;
};
std::vector<GroupCut> split_by_group(const graph::DependencyGraph& graph, const PruningPlan& plan);
// The cuts of several group plans in one plan (removed indices united per tensor dim).
PruningPlan merge_plans(const std::vector<const PruningPlan*>& plans);

// Applies `plan` (validated) and checks it: the forward runs, keeps its output shapes and equals
// the masked dense model within `tolerance`. When some of its groups are normalised, `exact_part`
// is `plan` without them: that part is applied, checked and undone first, then the whole plan is
// applied and its shapes checked (null: the whole plan is exact). `failure` is empty when it
// passed; either way `rollback` undoes the applied plan.
struct CheckedCut {
  Rollback rollback;
  std::string failure;
  double worst = 0;
};
CheckedCut apply_checked(ModelAccess& model, const ModelTensors& tensors, const graph::Forward& forward,
                         const PruningPlan& plan, const PruningPlan* exact_part, const OptimizerView* optimizer,
                         double tolerance = kExactTolerance);

// The same, checking only that the forward runs and gives output `shapes` (no masked forward).
CheckedCut apply_shape_checked(ModelAccess& model, const ModelTensors& tensors, const graph::Forward& forward,
                               const PruningPlan& plan, const std::vector<graph::Shape>& shapes,
                               const OptimizerView* optimizer);

struct ExactReport {
  double worst = 0;                      // as in OutputDifference
  double tolerance = kExactTolerance;
  bool exact = true;                     // worst <= tolerance and the shapes hold
  std::string group;                     // the first group whose own cut breaks it ("" when exact)
  std::string problem;                   // what broke, in words ("" when exact)
  std::vector<std::string> normalised;   // groups checked for shapes only
  std::string to_string() const;
};

// Checks a pruned model against its dense original: `after` is `before` with `plan` applied (by
// libprune, or replayed from a saved plan). `before` is traced to group the plan's cuts; when the
// outputs differ, each group's own cut is applied to `before` alone (and undone) to name the first
// that breaks it. With normalised groups, the rest of the plan is checked on `before` (applied and
// undone) and `after` for its output shapes. `before` ends as it began.
ExactReport check_exact(ModelAccess& before, const graph::Forward& before_forward, ModelAccess& after,
                        const graph::Forward& after_forward, const PruningPlan& plan,
                        double tolerance = kExactTolerance);

}  // namespace libprune::layers
