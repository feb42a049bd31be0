#include "libprune/layers/apply.h"

#include "libprune/layers/metadata.h"

#include <map>
#include <set>

namespace libprune::layers {
namespace {

std::map<std::string, torch::Tensor> named_tensors(torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model.named_parameters(true)) out[p.key()] = p.value();
  for (const auto& b : model.named_buffers(true)) out[b.key()] = b.value();
  return out;
}

std::string key_of(const torch::Tensor& t) { return c10::guts::to_string(t.unsafeGetTensorImpl()); }

// The per-parameter tensors an optimizer keeps that share the parameter's shape.
std::vector<std::reference_wrapper<torch::Tensor>> state_tensors(torch::optim::OptimizerParamState& s) {
  std::vector<std::reference_wrapper<torch::Tensor>> out;
  auto add = [&out](torch::Tensor& t) {
    if (t.defined()) out.emplace_back(t);
  };
  if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(&s)) {
    add(sgd->momentum_buffer());
  } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(&s)) {
    add(adam->exp_avg());
    add(adam->exp_avg_sq());
    add(adam->max_exp_avg_sq());
  } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(&s)) {
    add(adamw->exp_avg());
    add(adamw->exp_avg_sq());
    add(adamw->max_exp_avg_sq());
  } else if (auto* rms = dynamic_cast<torch::optim::RMSpropParamState*>(&s)) {
    add(rms->square_avg());
    add(rms->momentum_buffer());
    add(rms->grad_avg());
  } else if (auto* ada = dynamic_cast<torch::optim::AdagradParamState*>(&s)) {
    add(ada->sum());
  }
  return out;
}

torch::Tensor cut(const torch::Tensor& t, const std::vector<const schedule::TensorCut*>& cuts) {
  torch::NoGradGuard no_grad;
  const bool channels_last = t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor out = t;
  for (const auto* c : cuts) {
    out = out.index_select(c->dim, torch::tensor(c->keep, torch::TensorOptions().dtype(torch::kLong).device(t.device())));
  }
  return channels_last ? out.contiguous(torch::MemoryFormat::ChannelsLast) : out.contiguous();
}

}  // namespace

void validate_plan(torch::nn::Module& model, const schedule::PruningPlan& plan,
                   const torch::optim::Optimizer* optimizer) {
  const auto tensors = named_tensors(model);
  std::set<std::pair<std::string, int64_t>> seen;
  for (const auto& c : plan.cuts) {
    auto it = tensors.find(c.tensor);
    TORCH_CHECK_VALUE(it != tensors.end(), "the plan cuts '", c.tensor, "', which the model does not have: it was "
                      "recorded on another model. Fix: apply plans to the architecture they were made on (build the "
                      "same zoo model and replay its plan history in order)");
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
  if (optimizer) {
    std::set<const c10::TensorImpl*> held;
    for (const auto& group : optimizer->param_groups()) {
      for (const auto& p : group.params()) held.insert(p.unsafeGetTensorImpl());
    }
    std::set<const c10::TensorImpl*> params;
    for (const auto& p : model.parameters(true)) params.insert(p.unsafeGetTensorImpl());
    for (const auto& c : plan.cuts) {
      const auto* impl = tensors.at(c.tensor).unsafeGetTensorImpl();
      TORCH_CHECK_VALUE(!params.count(impl) || held.count(impl), "the optimizer does not hold parameter '", c.tensor,
                        "' of this model. Fix: pass the optimizer built from this model's parameters (or none)");
    }
  }
}

Rollback apply_cuts(torch::nn::Module& model, const schedule::PruningPlan& plan, torch::optim::Optimizer* optimizer) {
  auto tensors = named_tensors(model);
  std::map<std::string, std::vector<const schedule::TensorCut*>> by_tensor;
  for (const auto& c : plan.cuts) by_tensor[c.tensor].push_back(&c);

  std::map<std::string, torch::optim::OptimizerParamState*> states;
  if (optimizer) {
    for (auto& kv : optimizer->state()) states[kv.first] = kv.second.get();
  }

  Rollback rollback;
  try {
    for (auto& [name, cuts] : by_tensor) {
      torch::Tensor t = tensors.at(name);
      const torch::Tensor old = t.data();
      const auto new_data = cut(old, cuts);
      torch::Tensor grad = t.grad();
      torch::Tensor new_grad = grad.defined() && grad.sizes() == old.sizes() ? cut(grad, cuts) : torch::Tensor{};

      std::vector<std::pair<std::reference_wrapper<torch::Tensor>, torch::Tensor>> state_updates;
      auto st = states.find(key_of(t));
      if (st != states.end()) {
        for (auto ref : state_tensors(*st->second)) {
          if (ref.get().sizes() == old.sizes()) state_updates.emplace_back(ref, cut(ref.get(), cuts));
        }
      }
      // Everything is computed; now swap, recording how to swap back.
      t.set_data(new_data);
      rollback.add([t, old]() mutable { t.set_data(old); });
      if (grad.defined()) {
        t.mutable_grad() = new_grad;
        rollback.add([t, grad]() mutable { t.mutable_grad() = grad; });
      }
      for (auto& [ref, value] : state_updates) {
        torch::Tensor before = ref.get();
        ref.get() = value;
        torch::Tensor* slot = &ref.get();
        rollback.add([slot, before] { *slot = before; });
      }
    }
    update_module_metadata(model);
    rollback.add([&model] { update_module_metadata(model); });
  } catch (...) {
    rollback.run();
    update_module_metadata(model);
    throw;
  }
  // Module metadata must follow the tensors after an undo too.
  Rollback full;
  full.add([&model] { update_module_metadata(model); });
  Rollback inner = std::move(rollback);
  full.add([inner]() mutable { inner.run(); });
  return full;
}

void apply_plan(torch::nn::Module& model, const schedule::PruningPlan& plan, torch::optim::Optimizer* optimizer) {
  validate_plan(model, plan, optimizer);
  apply_cuts(model, plan, optimizer).release();
}

}  // namespace libprune::layers
