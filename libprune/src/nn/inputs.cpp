#include "libprune/nn/inputs.h"

#include <sstream>

namespace libprune::nn {

Inputs::Inputs(std::initializer_list<Item> items) {
  for (const auto& [name, t] : items) set(name, t);
}

Inputs& Inputs::set(const std::string& name, torch::Tensor value) {
  for (auto& item : items_) {
    if (item.first == name) {
      item.second = std::move(value);
      return *this;
    }
  }
  items_.emplace_back(name, std::move(value));
  return *this;
}

bool Inputs::has(const std::string& name) const {
  for (const auto& item : items_) {
    if (item.first == name) return true;
  }
  return false;
}

const torch::Tensor& Inputs::at(const std::string& name) const {
  for (const auto& item : items_) {
    if (item.first == name) return item.second;
  }
  TORCH_CHECK_VALUE(false, "the inputs have no \"", name, "\" (they have: ", describe(),
                    "). Fix: give the model the inputs it reads, or read the ones the dataset makes");
  return items_.front().second;  // unreachable
}

const torch::Tensor& Inputs::single() const {
  TORCH_CHECK_VALUE(items_.size() == 1, "this model takes one input tensor, but the batch has ", items_.size(), " (",
                    describe(), "). Fix: override ModelImpl::forward_inputs to read named inputs");
  return items_.front().second;
}

std::vector<torch::Tensor> Inputs::tensors() const {
  std::vector<torch::Tensor> out;
  for (const auto& item : items_) out.push_back(item.second);
  return out;
}

int64_t Inputs::batch_size() const {
  TORCH_CHECK_VALUE(!items_.empty() && items_.front().second.defined() && items_.front().second.dim() > 0,
                    "the inputs have no batch dimension (", describe(), ")");
  return items_.front().second.size(0);
}

Inputs Inputs::map(const std::function<torch::Tensor(const torch::Tensor&)>& fn) const {
  Inputs out;
  for (const auto& [name, t] : items_) out.items_.emplace_back(name, fn(t));
  return out;
}

std::string Inputs::describe() const {
  std::ostringstream s;
  for (size_t i = 0; i < items_.size(); ++i) {
    const auto& t = items_[i].second;
    s << (i ? ", " : "") << items_[i].first << " ";
    if (!t.defined()) {
      s << "(undefined)";
      continue;
    }
    s << t.sizes();
    if (!t.is_floating_point()) s << " (" << t.scalar_type() << ")";
  }
  return items_.empty() ? "none" : s.str();
}

}  // namespace libprune::nn
