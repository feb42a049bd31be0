#include "libprune/layers/model_access.h"

#include "libprune/layers/metadata.h"
#include "libprune/nn/eval_mode.h"
#include "libprune/nn/extension.h"

#include <algorithm>
#include <cstring>

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

std::vector<graph::Companion> ModelAccess::companions(const TensorList& parameters, const TensorList& buffers) const {
  std::map<std::string, int64_t> weights;
  for (const auto& [name, p] : parameters) {
    if (p.dim() == 1 && !graph::module_of_weight(name).empty()) weights[name] = p.size(0);
  }
  std::vector<graph::Companion> out;
  for (const auto& [name, b] : buffers) {
    for (const char* stat : {".running_mean", ".running_var"}) {
      const size_t n = std::strlen(stat);
      if (b.dim() != 1 || name.size() <= n || name.compare(name.size() - n, n, stat) != 0) continue;
      auto it = weights.find(name.substr(0, name.size() - n) + ".weight");
      if (it != weights.end()) out.push_back({name, 0, b.size(0), it->first, 0});
    }
  }
  // A per-channel weight quantiser's state ("conv1.weight_fake_quant.scale", a Python model's
  // libprune.quantize.FakeQuantize as a C++ one's) is cut with its layer's output channels.
  std::map<std::string, int64_t> rows;
  for (const auto& [name, p] : parameters) {
    if (p.dim() >= 1 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) rows[name] = p.size(0);
  }
  // (Its scale is a parameter when learned, LSQ.)
  const std::string owner = ".weight_fake_quant.";
  for (const auto* list : {&buffers, &parameters}) {
    for (const auto& [name, b] : *list) {
      const auto at = name.rfind(owner);
      if (at == std::string::npos || b.dim() != 1) continue;
      const auto it = rows.find(name.substr(0, at) + ".weight");
      if (it != rows.end() && it->second == b.size(0)) out.push_back({name, 0, b.size(0), it->first, 0});
    }
  }
  return out;
}

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

std::vector<TiedTensor> ModuleAccess::tied_tensors() const {
  std::vector<TiedTensor> out;
  for (const auto& m : module_->named_modules()) {
    if (!m.value()->as<torch::nn::MultiheadAttention>()) continue;
    const std::string prefix = m.key().empty() ? "" : m.key() + ".";
    const std::string reason = "heads of torch::nn::MultiheadAttention \"" + m.key() +
                               "\": it derives head_dim from embed_dim, so its heads can go only with the hidden size. "
                               "Fix: use libprune::nn::MultiheadSelfAttention, which keeps its head count in options";
    out.push_back({prefix + "in_proj_weight", 0, reason});
    out.push_back({prefix + "out_proj.weight", 1, reason});
    // Its embed_dim is checked against the input and fixes the packed q/k/v rows, so the width
    // around it stays too.
    const std::string width = "embed_dim of torch::nn::MultiheadAttention \"" + m.key() +
                              "\" is fixed by its packed in_proj (3 x embed_dim rows), so the width around it stays";
    out.push_back({prefix + "in_proj_weight", 1, width});
    out.push_back({prefix + "out_proj.weight", 0, width});
  }
  return out;
}

ModelTensors::ModelTensors(const ModelAccess& model)
    : parameters(model.parameters()), buffers(model.buffers()), companions(model.companions(parameters, buffers)) {}

std::map<std::string, torch::Tensor> ModelTensors::by_name() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, t] : parameters) out[name] = t;
  for (const auto& [name, t] : buffers) out[name] = t;
  return out;
}

std::vector<graph::Companion> ModuleAccess::companions(const TensorList& parameters, const TensorList& buffers) const {
  auto out = ModelAccess::companions(parameters, buffers);
  for (const auto& item : module_->named_modules()) {
    if (!nn::has_extensions(*item.value())) continue;
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    const auto tensors = item.value()->named_parameters(true);
    const auto buffers = item.value()->named_buffers(true);
    for (const auto& [name, ext] : nn::extensions(*item.value())) {
      for (const auto& tie : ext->channel_ties()) {
        const std::string own = name + "." + tie.tensor;
        const auto* t = tensors.find(own) ? tensors.find(own) : buffers.find(own);
        TORCH_CHECK_VALUE(t && t->dim() > tie.dim, "extension \"", prefix + name, "\" ties '", tie.tensor, "' dim ",
                          tie.dim, " to its layer, but has no such tensor or dim. Fix: name one of its own parameters or "
                          "buffers in channel_ties()");
        const std::string tensor = prefix + own;
        if (std::none_of(out.begin(), out.end(), [&](const graph::Companion& c) { return c.tensor == tensor; })) {
          out.push_back({tensor, tie.dim, t->size(tie.dim), prefix + tie.layer_tensor, tie.layer_dim});
        }
      }
    }
  }
  return out;
}

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
