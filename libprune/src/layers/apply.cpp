#include "libprune/layers/apply.h"

#include <torch/csrc/autograd/variable.h>

#include <map>
#include <set>

namespace libprune::layers {
namespace {

torch::Tensor cut(const torch::Tensor& t, const std::vector<const TensorCut*>& cuts) {
  torch::NoGradGuard no_grad;
  const bool channels_last = t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor out = t;
  for (const auto* c : cuts) {
    // The plan's own indices, without a copy (a copy per tensor added up over a large model).
    auto keep = torch::from_blob(const_cast<int64_t*>(c->keep.data()), {static_cast<int64_t>(c->keep.size())}, torch::kLong);
    out = out.index_select(c->dim, t.is_cpu() ? keep : keep.to(t.device()));
  }
  return channels_last ? out.contiguous(torch::MemoryFormat::ChannelsLast) : out.contiguous();
}

// set_data, then a fresh gradient accumulator. A parameter caches its AccumulateGrad node (with
// the shape it had) for as long as any graph holds it, and training loops keep the last graph
// alive (`loss` is still referenced when the next epoch prunes). Reusing that node after a cut
// fails the next backward ("expected shape compatible with [10, 512]"); dropping the cache makes
// the next forward build one with the new shape, and the old graph keeps its own.
void resize_in_place(torch::Tensor& t, const torch::Tensor& value) {
  t.set_data(value);
  if (auto* meta = torch::autograd::impl::get_autograd_meta(t)) meta->grad_accumulator_.reset();
}

}  // namespace

void validate_plan(const ModelAccess& model, const PruningPlan& plan, const OptimizerView* optimizer) {
  validate_plan(ModelTensors(model), plan, optimizer);
}

void validate_plan(const ModelTensors& model, const PruningPlan& plan, const OptimizerView* optimizer) {
  const auto tensors = model.by_name();
  std::set<std::pair<std::string, int64_t>> seen;
  for (const auto& c : plan.cuts) {
    auto it = tensors.find(c.tensor);
    TORCH_CHECK_VALUE(it != tensors.end(), "the plan cuts '", c.tensor, "', which the model does not have: it was "
                      "recorded on another model. Fix: apply plans to the architecture they were made on (build the "
                      "same model and replay its plan history in order)");
    const auto& t = it->second;
    TORCH_CHECK_VALUE(c.dim >= 0 && c.dim < t.dim(), "the plan cuts '", c.tensor, "' along dim ", c.dim,
                      ", but it has ", t.dim(), " dims. Fix: use the plan recorded on this model");
    TORCH_CHECK_VALUE(t.size(c.dim) == c.original_size, "the plan cuts '", c.tensor, "' along dim ", c.dim, " from ",
                      c.original_size, " to ", c.keep.size(), ", but the model has ", t.size(c.dim),
                      " there: it was recorded on another model or after other plans. Fix: replay the plan history "
                      "in order on a freshly built model");
    TORCH_CHECK_VALUE(!c.keep.empty(), "the plan removes every index of '", c.tensor, "' along dim ", c.dim,
                      ". Fix: keep at least one channel (min_channels)");
    for (size_t i = 0; i < c.keep.size(); ++i) {
      TORCH_CHECK_VALUE(c.keep[i] >= 0 && c.keep[i] < c.original_size && (i == 0 || c.keep[i] > c.keep[i - 1]),
                        "the plan's kept indices for '", c.tensor, "' are not sorted, unique and within [0, ",
                        c.original_size, "). Fix: regenerate the plan");
    }
    TORCH_CHECK_VALUE(seen.insert({c.tensor, c.dim}).second, "the plan cuts '", c.tensor, "' along dim ", c.dim,
                      " twice. Fix: merge the cuts");
  }
  if (optimizer && optimizer->given) {
    std::set<const c10::TensorImpl*> params;
    for (const auto& [name, p] : model.parameters) params.insert(p.unsafeGetTensorImpl());
    for (const auto& c : plan.cuts) {
      const auto* impl = tensors.at(c.tensor).unsafeGetTensorImpl();
      TORCH_CHECK_VALUE(!params.count(impl) || optimizer->held.count(impl), "the optimizer does not hold parameter '",
                        c.tensor, "' of this model. Fix: pass the optimizer built from this model's parameters (or none)");
    }
  }
}

Rollback apply_cuts(ModelAccess& model, const PruningPlan& plan, const OptimizerView* optimizer) {
  return apply_cuts(model, ModelTensors(model), plan, optimizer);
}

Rollback apply_cuts(ModelAccess& model, const ModelTensors& snapshot, const PruningPlan& plan,
                    const OptimizerView* optimizer) {
  auto tensors = snapshot.by_name();
  std::map<std::string, std::vector<const TensorCut*>> by_tensor;
  for (const auto& c : plan.cuts) by_tensor[c.tensor].push_back(&c);

  Rollback rollback;
  // Swaps `t`'s data for `value` in place and records the way back.
  auto swap = [&rollback](torch::Tensor t, const torch::Tensor& value) {
    const torch::Tensor old = t.data();
    resize_in_place(t, value);
    rollback.add([t, old]() mutable { resize_in_place(t, old); });
  };
  try {
    for (auto& [name, cuts] : by_tensor) {
      torch::Tensor t = tensors.at(name);
      const torch::Tensor old = t.data();
      // Compute everything for this tensor first, then swap.
      const auto new_data = cut(old, cuts);
      const torch::Tensor grad = t.grad();
      const torch::Tensor new_grad = grad.defined() && grad.sizes() == old.sizes() ? cut(grad, cuts) : torch::Tensor{};
      std::vector<std::pair<torch::Tensor, torch::Tensor>> state;
      if (optimizer) {
        auto it = optimizer->state.find(name);
        if (it != optimizer->state.end()) {
          for (const auto& s : it->second) {
            if (s.defined() && s.sizes() == old.sizes()) state.emplace_back(s, cut(s, cuts));
          }
        }
      }
      swap(t, new_data);
      if (grad.defined()) {
        t.mutable_grad() = new_grad;
        rollback.add([t, grad]() mutable { t.mutable_grad() = grad; });
      }
      for (auto& [s, value] : state) swap(s, value);
    }
    model.update_metadata();
  } catch (...) {
    rollback.run();
    model.update_metadata();
    throw;
  }
  // Undoing must also bring module metadata back in line with the restored tensors.
  Rollback full;
  full.add([&model] { model.update_metadata(); });
  full.add([inner = std::move(rollback)]() mutable { inner.run(); });
  return full;
}

void apply_plan(ModelAccess& model, const PruningPlan& plan, const OptimizerView* optimizer) {
  const ModelTensors tensors(model);  // one read of the model's tensors for both
  validate_plan(tensors, plan, optimizer);
  apply_cuts(model, tensors, plan, optimizer).release();
}

void apply_plan(torch::nn::Module& model, const PruningPlan& plan, torch::optim::Optimizer* optimizer) {
  ModuleAccess access(model.shared_from_this());
  if (optimizer) {
    const auto view = view_of(*optimizer, access);
    apply_plan(access, plan, &view);
  } else {
    apply_plan(access, plan);
  }
}

}  // namespace libprune::layers
