#pragma once
// The structural pruner: trace, group, score, choose, apply, verify.
//
//   libprune::schedule::Pruner pruner(model, [&] { return std::vector<torch::Tensor>{model->forward(x)}; },
//                                     PrunerOptions().ratio(0.5).ignored({"fc"}));
//   auto plan = pruner.step(&optimizer);   // model and optimizer state shrink in place
#include "libprune/graph/dependency_graph.h"
#include "libprune/importance/magnitude.h"
#include "libprune/layers/apply.h"
#include "libprune/schedule/plan.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace libprune::schedule {

struct PrunerOptions {
  PrunerOptions() = default;
  // Fraction of each group's channels to remove (local), or of all channels (global); [0, 1).
  TORCH_ARG(double, ratio) = 0.5;
  TORCH_ARG(std::string, importance) = "l1";
  TORCH_ARG(bool, global_ranking) = false;
  // Module names whose output channels stay (their input channels still follow their producer).
  TORCH_ARG(std::vector<std::string>, ignored) = {};
  // Kept channel counts are a multiple of this (channel counts that are not a multiple of 8 run
  // far slower per MAC on AVX-512 CPUs).
  TORCH_ARG(int64_t, round_to) = 1;
  TORCH_ARG(int64_t, min_channels) = 1;
  // Re-run the example forward after applying; on failure, roll back and pin the culprit groups.
  TORCH_ARG(bool, verify) = true;
  // Also cut the hidden size (embedding dim) of models with attention: the channels LayerNorm
  // normalises along the residual stream. Off by default: it changes every block at once.
  TORCH_ARG(bool, prune_hidden) = false;
};

class Pruner {
 public:
  Pruner(std::shared_ptr<layers::ModelAccess> model, graph::Forward example_forward, PrunerOptions options = {});
  // For C++ modules.
  Pruner(std::shared_ptr<torch::nn::Module> model, graph::Forward example_forward, PrunerOptions options = {});

  // Traces the model as it is now and groups its channels.
  graph::DependencyGraph graph() const;
  // What step() would cut, without changing anything.
  PruningPlan plan() const;
  // Applies plan(); the optimizer's per-parameter state shrinks too. Returns the applied plan,
  // also appended to history().
  PruningPlan step(torch::optim::Optimizer* optimizer = nullptr);
  // The same for an optimizer seen through its state tensors (the Python bindings' path).
  PruningPlan step(const layers::OptimizerView* optimizer);

  const std::vector<PruningPlan>& history() const { return history_; }
  // Groups pinned by the last verification, with the reason.
  const std::vector<std::string>& verification_pins() const { return verification_pins_; }
  const PrunerOptions& options() const { return options_; }

 private:
  // Plans the cut of every free group whose index is not in `skip`; `used` receives the indices
  // of the groups the plan cuts.
  PruningPlan make_plan(const graph::DependencyGraph& g, const std::set<size_t>& skip,
                        std::vector<size_t>* used = nullptr) const;
  graph::Trace trace() const;
  // The graph of `traced`, with the policy pins: the hidden size, heads a module ties to it.
  graph::DependencyGraph build_graph(const graph::Trace& traced) const;
  std::vector<graph::Shape> run_shapes() const;

  std::shared_ptr<layers::ModelAccess> model_;
  graph::Forward forward_;
  PrunerOptions options_;
  importance::Kind importance_;
  std::vector<PruningPlan> history_;
  std::vector<std::string> verification_pins_;
};

}  // namespace libprune::schedule
