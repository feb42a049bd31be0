#include "libprune/importance/importance.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>

namespace libprune::importance {

namespace {
const char* const kNames[] = {"l1", "l2", "bn_scale", "taylor", "fpgm", "lamp", "random"};
const char* const kReductions[] = {"sum", "mean", "max", "first"};
}  // namespace

// The enum value whose name is `name` (enums number their values in table order); otherwise an
// error listing the table.
template <typename E, size_t N>
E parse_name(const char* const (&names)[N], const std::string& name, const char* what) {
  std::string all;
  for (size_t i = 0; i < N; ++i) {
    if (name == names[i]) return static_cast<E>(i);
    all += (i ? ", " : "") + std::string(names[i]);
  }
  TORCH_CHECK_VALUE(false, "unknown ", what, " \"", name, "\"; expected one of ", all);
  return static_cast<E>(0);
}

Kind parse(const std::string& name) { return parse_name<Kind>(kNames, name, "importance"); }

const char* to_string(Kind kind) { return kNames[static_cast<size_t>(kind)]; }

Reduction parse_reduction(const std::string& name) {
  return parse_name<Reduction>(kReductions, name, "importance reduction");
}

const char* to_string(Reduction r) { return kReductions[static_cast<size_t>(r)]; }

namespace {

// Sum over every other dim of |w| (abs) or w^2, one value per index along `dim`. Works in blocks
// of indices: a whole-tensor abs() or square() of a large linear layer allocates hundreds of MB,
// and on this class of VM fresh pages cost more than the arithmetic (0.6 s for alexnet's
// 37M-weight classifier against 0.02 s in blocks).
torch::Tensor per_index(const torch::Tensor& t, int64_t dim, bool squared) {
  const auto w = t.detach().movedim(dim, 0);
  const int64_t n = w.size(0);
  const int64_t row = n == 0 ? 0 : w.numel() / n;
  const int64_t block = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, row));
  auto out = torch::empty({n}, torch::TensorOptions().dtype(torch::kFloat64));
  for (int64_t start = 0; start < n; start += block) {
    const auto chunk = w.narrow(0, start, std::min(block, n - start)).reshape({-1, row});
    const auto magnitude = squared ? chunk.square() : chunk.abs();
    out.narrow(0, start, chunk.size(0)).copy_(magnitude.sum(1).to(torch::kFloat64).cpu());
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_scale(const torch::Tensor& t, const std::string& name) { return t.dim() == 1 && ends_with(name, ".weight"); }

// Per-index values of one member under `kind`, or undefined when the member does not take part.
torch::Tensor member_values(Kind kind, const std::string& name, const torch::Tensor& t, int64_t dim,
                            const Gradients* accumulated) {
  switch (kind) {
    case Kind::L1: return per_index(t, dim, false);
    case Kind::L2: return per_index(t, dim, true);
    case Kind::BnScale: return is_scale(t, name) ? t.detach().abs().to(torch::kFloat64).cpu() : torch::Tensor();
    case Kind::Taylor: {
      torch::Tensor wg;
      if (accumulated) {
        auto it = accumulated->find(name);
        if (it != accumulated->end()) wg = it->second;
      }
      if (!wg.defined()) {
        TORCH_CHECK_VALUE(t.grad().defined(), "taylor importance needs gradients, and \"", name,
                          "\" has none. Fix: run loss.backward() (or accumulate over a few batches) before pruning");
        wg = (t.detach() * t.grad()).abs();
      }
      return per_index(wg, dim, false);
    }
    case Kind::Fpgm: {
      if (dim != 0 || t.dim() < 2) return {};
      const auto rows = t.detach().reshape({t.size(0), -1}).to(torch::kFloat64);
      return torch::cdist(rows.unsqueeze(0), rows.unsqueeze(0)).squeeze(0).sum(1).cpu();
    }
    case Kind::Lamp: {
      if (t.dim() < 2) return {};
      const auto sq = per_index(t, dim, true);
      const auto sorted = sq.sort();
      const auto values = std::get<0>(sorted), order = std::get<1>(sorted);
      // Sum over every index at least as large: a reversed cumulative sum of the ascending values.
      const auto tail = values.flip(0).cumsum(0).flip(0);
      auto out = torch::empty_like(sq);
      out.index_put_({order}, values / tail.clamp_min(1e-300));
      return out;
    }
    case Kind::Random: return {};
  }
  return {};
}

}  // namespace

std::vector<double> score(const graph::Group& group, const std::map<std::string, torch::Tensor>& params,
                          const ImportanceOptions& options, const Gradients* accumulated) {
  torch::NoGradGuard no_grad;
  const size_t units = static_cast<size_t>(group.size());
  std::vector<double> scores(units, 0.0);
  if (options.kind() == Kind::Random) {
    std::mt19937_64 rng(options.seed() ^ std::hash<std::string>{}(group.name()));
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    for (auto& s : scores) s = uniform(rng);
    return scores;
  }
  auto run = [&](Kind kind) {
    std::vector<std::vector<double>> per_member;  // [member][unit]
    for (size_t m = 0; m < group.members.size(); ++m) {
      auto it = params.find(group.members[m].tensor);
      if (it == params.end()) continue;
      const auto v = member_values(kind, it->first, it->second, group.members[m].dim, accumulated);
      if (!v.defined()) continue;
      const auto values = v.contiguous();
      const double* p = values.data_ptr<double>();
      std::vector<double> unit(units, 0.0);
      for (size_t u = 0; u < units; ++u) {
        for (int64_t idx : group.indices[u][m]) unit[u] += p[idx];
      }
      per_member.push_back(std::move(unit));
    }
    return per_member;
  };
  Kind kind = options.kind();
  auto per_member = run(kind);
  if (per_member.empty() && (kind == Kind::BnScale || kind == Kind::Fpgm || kind == Kind::Lamp)) {
    // No norm scale / no filters in this group (a linear-only group, say): fall back to magnitude.
    kind = kind == Kind::BnScale ? Kind::L1 : Kind::L2;
    per_member = run(kind);
  }
  for (size_t u = 0; u < units && !per_member.empty(); ++u) {
    double acc = options.reduction() == Reduction::Max ? -INFINITY : 0.0;
    for (const auto& member : per_member) {
      switch (options.reduction()) {
        case Reduction::Sum:
        case Reduction::Mean: acc += member[u]; break;
        case Reduction::Max: acc = std::max(acc, member[u]); break;
        case Reduction::First: break;
      }
    }
    if (options.reduction() == Reduction::Mean) acc /= static_cast<double>(per_member.size());
    if (options.reduction() == Reduction::First) acc = per_member.front()[u];
    scores[u] = kind == Kind::L2 ? std::sqrt(acc) : acc;
  }
  if (options.normalize()) {
    const double total = std::accumulate(scores.begin(), scores.end(), 0.0);
    if (total > 0) {
      for (auto& s : scores) s /= total;
    }
  }
  return scores;
}

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

}  // namespace libprune::importance
