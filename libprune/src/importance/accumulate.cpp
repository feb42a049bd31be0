// Gradient statistics accumulated over batches for the gradient criteria (taylor, mask_grad).
#include "libprune/importance/importance.h"

namespace libprune::importance {

void accumulate_taylor(const std::vector<std::pair<std::string, torch::Tensor>>& params, Gradients& into) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    if (!p.grad().defined()) continue;
    auto value = (p.detach() * p.grad()).abs();
    auto it = into.find(name);
    if (it == into.end() || !it->second.sizes().equals(value.sizes())) {
      into[name] = value.clone();
    } else {
      it->second.add_(value);
    }
  }
}

namespace {

// Appends `row` to the [batches, n] statistics under `key` (restarts when the size changed: a cut).
void append_row(Gradients& into, const std::string& key, const torch::Tensor& row) {
  auto it = into.find(key);
  if (it == into.end() || it->second.size(1) != row.size(0)) {
    into[key] = row.unsqueeze(0).clone();
  } else {
    it->second = torch::cat({it->second, row.unsqueeze(0)});
  }
}

}  // namespace

torch::Tensor gate_sums(const torch::Tensor& p, int64_t dim) {
  torch::NoGradGuard no_grad;
  const auto wg = (p.detach() * p.grad()).to(torch::kFloat64);
  return wg.movedim(dim, 0).reshape({p.size(dim), -1}).sum(1).cpu();
}

bool accumulates(const std::string& criterion) { return criterion == "taylor" || criterion == "mask_grad"; }

void accumulate(const std::string& criterion, const std::vector<std::pair<std::string, torch::Tensor>>& params,
                Gradients& into) {
  if (criterion == "taylor") return accumulate_taylor(params, into);
  TORCH_CHECK_VALUE(criterion == "mask_grad", "accumulate: \"", criterion,
                    "\" does not read accumulated gradients. Fix: accumulate for taylor or mask_grad only");
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    if (!p.grad().defined() || p.dim() < 1) continue;
    append_row(into, name + "@0", gate_sums(p, 0));
    if (p.dim() >= 2) append_row(into, name + "@1", gate_sums(p, 1));
  }
}

}  // namespace libprune::importance
