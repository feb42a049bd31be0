#include "libprune/importance/magnitude.h"

#include <cmath>

namespace libprune::importance {

Kind parse(const std::string& name) {
  if (name == "l1") return Kind::L1;
  if (name == "l2") return Kind::L2;
  TORCH_CHECK_VALUE(false, "unknown importance \"", name, "\"; expected one of l1, l2 (bn_scale, taylor, fpgm, lamp "
                    "and random come with the training-loop release)");
  return Kind::L1;
}

const char* to_string(Kind kind) { return kind == Kind::L1 ? "l1" : "l2"; }

std::vector<double> score(const graph::Group& group, const std::map<std::string, torch::Tensor>& params, Kind kind) {
  torch::NoGradGuard no_grad;
  std::vector<double> scores(static_cast<size_t>(group.size()), 0.0);
  for (size_t m = 0; m < group.members.size(); ++m) {
    auto it = params.find(group.members[m].tensor);
    if (it == params.end()) continue;
    const auto& t = it->second;
    const int64_t dim = group.members[m].dim;
    // Per-index magnitude along `dim`, reduced over every other dim.
    auto moved = t.detach().to(torch::kFloat64).movedim(dim, 0).reshape({t.size(dim), -1});
    auto per_index = kind == Kind::L1 ? moved.abs().sum(1) : moved.pow(2).sum(1);
    const auto acc = per_index.contiguous().cpu();
    const double* v = acc.data_ptr<double>();
    for (size_t u = 0; u < scores.size(); ++u) {
      for (int64_t idx : group.indices[u][m]) scores[u] += v[idx];
    }
  }
  if (kind == Kind::L2) {
    for (auto& s : scores) s = std::sqrt(s);
  }
  return scores;
}

}  // namespace libprune::importance
