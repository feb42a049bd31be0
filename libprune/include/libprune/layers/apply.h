#pragma once
// Tensor surgery: applies a plan's cuts in place to parameters, buffers, their .grad, and the
// optimizer's per-parameter state, then updates module metadata. All or nothing: the plan is
// validated first, and on any failure every tensor is restored.
#include "libprune/schedule/plan.h"

#include <torch/torch.h>

#include <functional>

namespace libprune::layers {

// Undoes an applied plan (restores every tensor, grad, optimizer state and module option).
class Rollback {
 public:
  void add(std::function<void()> undo) { undo_.push_back(std::move(undo)); }
  void run() {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) (*it)();
    undo_.clear();
  }
  void release() { undo_.clear(); }

 private:
  std::vector<std::function<void()>> undo_;
};

// Checks that `plan` fits the module: every tensor exists with the recorded size, indices are
// valid, and `optimizer` (when given) holds every cut parameter. Throws c10::ValueError naming the
// first problem and the fix.
void validate_plan(torch::nn::Module& model, const schedule::PruningPlan& plan,
                   const torch::optim::Optimizer* optimizer = nullptr);

// Applies a validated plan; the returned Rollback can undo it (the Pruner's verify step uses it).
Rollback apply_cuts(torch::nn::Module& model, const schedule::PruningPlan& plan,
                    torch::optim::Optimizer* optimizer = nullptr);

// validate_plan + apply_cuts.
void apply_plan(torch::nn::Module& model, const schedule::PruningPlan& plan,
                torch::optim::Optimizer* optimizer = nullptr);

}  // namespace libprune::layers
