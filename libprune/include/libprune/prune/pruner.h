#pragma once
// The structural pruner: trace, group, score, choose, apply, verify.
//
//   libprune::prune::Pruner pruner(model, [&] { return std::vector<torch::Tensor>{model->forward(x)}; },
//                                     PrunerOptions().ratio(0.5).ignored_layers({"fc"}));
//   auto plan = pruner.step(&optimizer);   // model and optimizer state shrink in place
#include "libprune/graph/dependency_graph.h"
#include "libprune/importance/importance.h"
#include "libprune/layers/apply.h"
#include "libprune/layers/exact.h"
#include "libprune/prune/options.h"
#include "libprune/layers/plan.h"
#include "libprune/measure/latency_table.h"
#include "libprune/prune/sensitivity.h"

#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace libprune::prune {

namespace detail {
struct Candidate;
}

class Pruner {
 public:
  Pruner(std::shared_ptr<layers::ModelAccess> model, graph::Forward example_forward, PrunerOptions options = {});
  // For C++ modules.
  Pruner(std::shared_ptr<torch::nn::Module> model, graph::Forward example_forward, PrunerOptions options = {});

  // Traces the model as it is now and groups its channels.
  graph::DependencyGraph graph() const;
  // What step() would cut, without changing anything.
  layers::PruningPlan plan() const;
  // Applies plan(); the optimizer's per-parameter state shrinks too. Returns the applied plan,
  // also appended to history().
  layers::PruningPlan step(torch::optim::Optimizer* optimizer = nullptr);
  // The same for an optimizer seen through its state tensors (the Python bindings' path).
  layers::PruningPlan step(const layers::OptimizerView* optimizer);

  // Chosen units instead of a ratio (what transformers' prune_heads does for heads): module name
  // -> ordinals of the units of the group that cuts that module's outputs, where unit k owns the
  // module's k-th block of outputs *as it is now* (a filter, a neuron, a head of an attention
  // projection; on an unpruned model these are the original indices, after a cut they count the
  // units left, whereas prune_heads takes original indices). Every coupled tensor follows and the
  // cut is verified, as in a ratio cut. Throws naming the module when no free group cuts its
  // outputs, an ordinal is out of range, every unit would go, or two names reach the same group.
  layers::PruningPlan plan_removing(const std::map<std::string, std::vector<int64_t>>& units) const;
  // Applies plan_removing(units) (with the optimizer's state) and appends it to history().
  layers::PruningPlan remove_units(const std::map<std::string, std::vector<int64_t>>& units,
                                   torch::optim::Optimizer* optimizer = nullptr);
  layers::PruningPlan remove_units(const std::map<std::string, std::vector<int64_t>>& units,
                                   const layers::OptimizerView* optimizer);

  // Applies a plan made elsewhere (rank 0's in a data-parallel run, a saved one) with the
  // optimizer's state: validated first, all or nothing, not re-verified, appended to history().
  layers::PruningPlan apply(const layers::PruningPlan& plan, torch::optim::Optimizer* optimizer = nullptr);

  // Sensitivity scan (prune/sensitivity.h): `evaluate()` on the model as it is, then for every
  // free group and each ratio with only that group cut by that ratio of its current units (ranked
  // by this pruner's importance; min_channels and round_to apply). Each cut is simulated by masking
  // the units it removes (layers::Overwrites; the cut model computes the same, as layers/exact.h
  // verifies on every step), so nothing is reallocated and every parameter is as it was afterwards,
  // also when evaluate() throws (buffers are the caller's: evaluate in eval mode). Groups a
  // LayerNorm or GroupNorm normalises across are listed in `skipped`, not scanned: zeroing is not
  // their cut.
  Sensitivity sensitivity(const std::function<double()>& evaluate, const std::vector<double>& ratios) const;

  const std::vector<layers::PruningPlan>& history() const { return history_; }
  // Records every group's size as the base that ratios count against (done lazily by the first
  // plan; call it first when a saved plan history will be replayed before the next step).
  void record_sizes();
  // The next step's ratio (schedules raise it step by step); checked like the option.
  void set_ratio(double ratio);
  // The table a latency target is costed with (options().target), measured on the deployment
  // machine from the dense model at the deployment batch.
  void set_latency_table(std::shared_ptr<const measure::LatencyTable> table) { latency_table_ = std::move(table); }
  const std::shared_ptr<const measure::LatencyTable>& latency_table() const { return latency_table_; }
  // The scan a target divides its cut by under allocation sensitivity (of this model before its
  // first cut: later cuts read the same curves at the units removed since).
  void set_sensitivity(std::shared_ptr<const Sensitivity> scan) { sensitivity_ = std::move(scan); }
  // Measures the model as it is now at the deployment batch, in ms (as the table's dense time was
  // measured). With a latency target, a step on an already pruned model first measures it and
  // scales the table's predictions by measured / predicted there, so the error of isolated-layer
  // timings on thin models does not carry whole into the next cut.
  void set_latency_probe(std::function<double()> probe) { latency_probe_ = std::move(probe); }
  // How far the next step goes toward a target: 0 keeps the dense model's cost, 1 (the default)
  // reaches the target; schedules step it as they step a ratio.
  void set_progress(double progress);
  // Accumulated |w * dL/dw| for the "taylor" criterion (not owned; null: use each .grad).
  void set_gradients(const importance::Gradients* gradients) { gradients_ = gradients; }
  // Groups pinned by the last verification, with the reason. They stay pinned for this pruner's
  // later steps, and graph() (so explain()) shows them pinned with that reason.
  const std::vector<std::string>& verification_pins() const { return verification_pins_; }
  const PrunerOptions& options() const { return options_; }

 private:
  layers::PruningPlan plan_removing(const std::map<std::string, std::vector<int64_t>>& units,
                                    const graph::DependencyGraph& g, const layers::ModelTensors& tensors) const;
  // Every free group whose index is not in `skip`, scored, at its full size.
  std::vector<detail::Candidate> candidates_of(const graph::DependencyGraph& g, const layers::ModelTensors& tensors,
                                               const std::set<size_t>& skip) const;
  // Plans the cut of every free group whose index is not in `skip`.
  layers::PruningPlan make_plan(const graph::DependencyGraph& g, const graph::Trace& traced,
                                const layers::ModelTensors& tensors, const std::set<size_t>& skip) const;
  // (predicted, measured) ms of the model as it is, when a latency probe can calibrate a step.
  std::pair<double, double> latency_point(const graph::Trace& traced) const;
  graph::Trace trace(const layers::ModelTensors& tensors) const;
  // The ratio of a group that cuts these modules' outputs: the first override naming one, else the ratio.
  double ratio_of(const std::vector<std::string>& modules) const;
  // The graph of `traced`, with the policy pins: the hidden size, heads a module ties to it.
  graph::DependencyGraph build_graph(const graph::Trace& traced, const layers::ModelTensors& tensors) const;
  // Applies `plan` and checks it (layers/exact.h; verify_values off: the shapes only).
  layers::CheckedCut checked_cut(const graph::DependencyGraph& g, const layers::ModelTensors& tensors,
                                 const layers::PruningPlan& plan, const layers::OptimizerView* optimizer) const;

  std::shared_ptr<layers::ModelAccess> model_;
  graph::Forward forward_;
  PrunerOptions options_;
  importance::ImportanceOptions importance_;
  const importance::Gradients* gradients_ = nullptr;
  std::shared_ptr<const measure::LatencyTable> latency_table_;
  std::shared_ptr<const Sensitivity> sensitivity_;
  std::function<double()> latency_probe_;
  double progress_ = 1;
  std::vector<std::pair<std::string, std::regex>> overrides_;
  // Unit count of each group (by name) when the pruner first saw it.
  mutable std::map<std::string, int64_t> original_sizes_;
  std::vector<layers::PruningPlan> history_;
  std::vector<std::string> verification_pins_;
  std::vector<graph::Shape> shapes_;  // the example's output shapes before this step's cut
  std::map<std::string, std::string> verification_pinned_;  // group name -> reason, over every step
};

}  // namespace libprune::prune
