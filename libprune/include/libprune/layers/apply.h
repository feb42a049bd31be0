#pragma once
// Tensor surgery: applies a plan's cuts in place to parameters, buffers, their .grad, and the
// optimizer's per-parameter state, then updates module metadata. All or nothing: the plan is
// validated first, and on any failure every tensor is restored. Tensors keep their identity
// (set_data), so optimizers and Python references keep working.
#include "libprune/layers/model_access.h"
#include "libprune/layers/plan.h"

#include <functional>

namespace libprune::layers {

// Undoes applied cuts when run(); release() makes them permanent.
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

// Checks that `plan` fits the model: every tensor exists with the recorded size, indices are
// valid, and the optimizer (when given) holds every cut parameter. Throws c10::ValueError naming
// the first problem and the fix.
void validate_plan(const ModelAccess& model, const PruningPlan& plan, const OptimizerView* optimizer = nullptr);
// The same on tensors already read (ModelTensors).
void validate_plan(const ModelTensors& tensors, const PruningPlan& plan, const OptimizerView* optimizer = nullptr);

// Applies a validated plan; the returned Rollback undoes it (the Pruner's verify step uses it).
Rollback apply_cuts(ModelAccess& model, const PruningPlan& plan, const OptimizerView* optimizer = nullptr);
Rollback apply_cuts(ModelAccess& model, const ModelTensors& tensors, const PruningPlan& plan,
                    const OptimizerView* optimizer = nullptr);

// validate_plan + apply_cuts, kept.
void apply_plan(ModelAccess& model, const PruningPlan& plan, const OptimizerView* optimizer = nullptr);

// For C++ modules (owned by a shared_ptr, as every ModuleHolder's is).
void apply_plan(torch::nn::Module& model, const PruningPlan& plan,
                torch::optim::Optimizer* optimizer = nullptr);

}  // namespace libprune::layers
