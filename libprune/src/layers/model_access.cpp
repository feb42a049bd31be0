#include "libprune/layers/model_access.h"

#include "libprune/layers/metadata.h"
#include "libprune/nn/eval_mode.h"

namespace libprune::layers {
namespace {

std::vector<torch::Tensor> state_tensors(torch::optim::OptimizerParamState& s) {
  std::vector<torch::Tensor> out;
  auto add = [&out](const torch::Tensor& t) {
    if (t.defined()) out.push_back(t);
  };
  if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(&s)) {
    add(sgd->momentum_buffer());
  } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(&s)) {
    for (const auto* t : {&adam->exp_avg(), &adam->exp_avg_sq(), &adam->max_exp_avg_sq()}) add(*t);
  } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(&s)) {
    for (const auto* t : {&adamw->exp_avg(), &adamw->exp_avg_sq(), &adamw->max_exp_avg_sq()}) add(*t);
  } else if (auto* rms = dynamic_cast<torch::optim::RMSpropParamState*>(&s)) {
    for (const auto* t : {&rms->square_avg(), &rms->momentum_buffer(), &rms->grad_avg()}) add(*t);
  } else if (auto* ada = dynamic_cast<torch::optim::AdagradParamState*>(&s)) {
    add(ada->sum());
  }
  return out;
}

}  // namespace

ModuleAccess::ModuleAccess(std::shared_ptr<torch::nn::Module> module) : module_(std::move(module)) {
  TORCH_CHECK_VALUE(module_, "the model is null. Fix: pass the model to prune");
}

TensorList ModuleAccess::parameters() const {
  TensorList out;
  for (const auto& p : module_->named_parameters(true)) out.emplace_back(p.key(), p.value());
  return out;
}

TensorList ModuleAccess::buffers() const {
  TensorList out;
  for (const auto& b : module_->named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

std::vector<std::string> ModuleAccess::module_names() const {
  std::vector<std::string> out;
  for (const auto& m : module_->named_modules()) out.push_back(m.key());
  return out;
}

void ModuleAccess::update_metadata() { update_module_metadata(*module_); }

std::shared_ptr<void> ModuleAccess::eval_scope() { return std::make_shared<nn::EvalModeGuard>(*module_); }

OptimizerView view_of(torch::optim::Optimizer& optimizer, const ModelAccess& model) {
  OptimizerView view;
  view.given = true;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) view.held.insert(p.unsafeGetTensorImpl());
  }
  for (const auto& [name, p] : model.parameters()) {
    auto it = optimizer.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
    if (it != optimizer.state().end()) view.state[name] = state_tensors(*it->second);
  }
  return view;
}

}  // namespace libprune::layers
