#include "candidates.h"
#include "libprune/prune/pruner.h"

#include <algorithm>
#include <numeric>
#include <set>

namespace libprune::prune {

using detail::Candidate;

namespace {

using Units = std::map<std::string, std::vector<int64_t>>;

}  // namespace

layers::PruningPlan Pruner::plan_removing(const Units& units) const {
  const layers::ModelTensors tensors(*model_);
  return plan_removing(units, build_graph(trace(tensors), tensors), tensors);
}

layers::PruningPlan Pruner::plan_removing(const Units& units, const graph::DependencyGraph& g,
                                          const layers::ModelTensors& tensors) const {
  // Ratios of later steps count against the sizes before this cut, as after a first step.
  for (const auto& grp : g.groups()) original_sizes_.emplace(grp.name(), grp.size());
  std::vector<Candidate> candidates;
  std::map<const graph::Group*, std::string> named;
  for (const auto& [module, ordinals] : units) {
    const graph::Group* grp = nullptr;
    size_t member = 0;
    for (const auto& candidate : g.groups()) {
      for (size_t m = 0; m < candidate.members.size() && !grp; ++m) {
        if (candidate.members[m].dim == 0 && candidate.members[m].tensor == module + ".weight") grp = &candidate, member = m;
      }
    }
    TORCH_CHECK_VALUE(grp, "remove_units: no group cuts the outputs of '", module,
                      "'. Fix: name a layer with a weight (conv, linear, attention projection) by its module name");
    TORCH_CHECK_VALUE(!grp->pinned, "remove_units: the outputs of '", module, "' cannot be cut: ", grp->reason);
    const auto [it, fresh] = named.emplace(grp, module);
    TORCH_CHECK_VALUE(fresh, "remove_units: '", module, "' and '", it->second, "' are cut together (group ",
                      grp->name(), "). Fix: name one of them");
    // Unit k owns the module's k-th block of outputs.
    std::vector<size_t> order(static_cast<size_t>(grp->size()));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return grp->unit(a, member)[0] < grp->unit(b, member)[0]; });
    const std::set<int64_t> drop(ordinals.begin(), ordinals.end());
    Candidate c{grp, std::vector<double>(order.size(), 1.0)};
    for (const auto k : drop) {
      TORCH_CHECK_VALUE(k >= 0 && k < grp->size(), "remove_units: '", module, "' has ", grp->size(), " units; unit ", k,
                        " does not exist");
      c.scores[order[static_cast<size_t>(k)]] = 0;
    }
    TORCH_CHECK_VALUE(static_cast<int64_t>(drop.size()) < grp->size(), "remove_units: removing every unit of '", module,
                      "' empties it. Fix: keep at least one");
    c.original = grp->size();
    c.keep = grp->size() - static_cast<int64_t>(drop.size());
    candidates.push_back(std::move(c));
  }
  return cuts_of(candidates, tensors.by_name());
}

layers::PruningPlan Pruner::remove_units(const Units& units, torch::optim::Optimizer* optimizer) {
  if (!optimizer) return remove_units(units, static_cast<const layers::OptimizerView*>(nullptr));
  const auto view = layers::view_of(*optimizer, *model_);
  return remove_units(units, &view);
}

layers::PruningPlan Pruner::remove_units(const Units& units, const layers::OptimizerView* optimizer) {
  const layers::ModelTensors tensors(*model_);
  const auto traced = trace(tensors);
  shapes_ = traced.output_shapes();
  const auto g = build_graph(traced, tensors);
  const auto plan = plan_removing(units, g, tensors);
  layers::validate_plan(tensors, plan, optimizer);
  // Checked as a ratio cut is (verify, verify_values); a failure puts everything back.
  if (options_.verify()) {
    auto checked = checked_cut(g, tensors, plan, optimizer);
    if (!checked.failure.empty()) {
      checked.rollback.run();
      TORCH_CHECK_VALUE(false, "remove_units: the cut fails verification (", checked.failure, "); nothing was ",
                        "changed. The model's own code reads this width. Fix: choose other units, or set verify off");
    }
    checked.rollback.release();
  } else {
    layers::apply_cuts(*model_, tensors, plan, optimizer).release();
  }
  history_.push_back(plan);
  return plan;
}

layers::PruningPlan Pruner::apply(const layers::PruningPlan& plan, torch::optim::Optimizer* optimizer) {
  if (original_sizes_.empty()) record_sizes();  // later ratios count against the sizes before this cut
  if (optimizer) {
    const auto view = layers::view_of(*optimizer, *model_);
    layers::apply_plan(*model_, plan, &view);
  } else {
    layers::apply_plan(*model_, plan);
  }
  history_.push_back(plan);
  return plan;
}

}  // namespace libprune::prune
