#include "budget.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

namespace libprune::prune::detail {
namespace {

// A layer dimension's width: `mult` x the kept units of candidate `cand`, or `fixed`.
struct SiteDim {
  int cand = -1;
  int64_t mult = 1, fixed = 0, original = 0;
};

struct CostSite {
  const measure::OpSite* op;
  SiteDim in, out;
  int table = -1;
  double elements = 0;  // output elements per channel at the table's batch
};

std::string budget_number(double v) {
  std::ostringstream s;
  s.precision(v < 10 ? 3 : 1);
  s << std::fixed << v;
  return s.str();
}

class SiteCosts {
 public:
  SiteCosts(std::string kind, std::vector<CostSite> sites, const measure::LatencyTable* table)
      : kind_(std::move(kind)), sites_(std::move(sites)), table_(table) {
    if (table_) {
      for (const auto& s : sites_) dense_elements_ += s.elements * static_cast<double>(s.out.original);
    }
  }
  int64_t width(const SiteDim& d, const std::vector<int64_t>& keep) const {
    return d.cand >= 0 ? keep[static_cast<size_t>(d.cand)] * d.mult : d.fixed;
  }
  double site(size_t i, const std::vector<int64_t>& keep) const {
    const auto& s = sites_[i];
    const int64_t out = width(s.out, keep), in = !s.op->layer() || s.op->depthwise() ? out : width(s.in, keep);
    if (kind_ == "macs") return s.op->macs(in, out);
    if (kind_ == "params") return s.op->params(in, out);
    return table_->op_ms(static_cast<size_t>(s.table), in, out) +
           table_->rest_ms() * s.elements * static_cast<double>(out) / std::max(1.0, dense_elements_);
  }
  double total(const std::vector<int64_t>& keep) const {
    double c = 0;
    for (size_t i = 0; i < sites_.size(); ++i) c += site(i, keep);
    return c;
  }
  const std::vector<CostSite>& sites() const { return sites_; }

 private:
  std::string kind_;
  std::vector<CostSite> sites_;
  const measure::LatencyTable* table_;
  double dense_elements_ = 0;
};

// The widths a candidate may take, in units, ascending, from its floor to its current size.
std::vector<int64_t> levels_of(const Candidate& c, const std::vector<CostSite>& sites, int ci, bool latency,
                               const PrunerOptions& o) {
  const int64_t size = c.group->size();
  int64_t floor = std::max(o.min_channels(),
                           c.original - static_cast<int64_t>(std::floor(static_cast<double>(c.original) * o.max_ratio() + 1e-9)));
  std::vector<int64_t> levels;
  const SiteDim* dim = nullptr;
  for (const auto& s : sites) {
    if (s.out.cand == ci) dim = &s.out;
    if (!dim && s.in.cand == ci) dim = &s.in;
  }
  if (latency && dim) {
    for (int64_t w : measure::LatencyTable::sample_widths(c.original * dim->mult)) {
      // round_to holds here too: a width the user's hardware wants aligned is only chosen aligned.
      if (w % dim->mult == 0 && (w / dim->mult) % o.round_to() == 0) levels.push_back(w / dim->mult);
    }
  }
  if (levels.size() < 2) {
    levels.clear();
    for (int64_t k = o.round_to(); k < size; k += o.round_to()) levels.push_back(k);
  }
  std::vector<int64_t> out;
  for (int64_t k : levels) {
    if (k >= floor && k < size) out.push_back(k);
  }
  out.push_back(size);
  return out;
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& budget_kinds() {
  static const std::vector<std::pair<std::string, std::string>> kinds{
      {"latency", "measured latency as a fraction of the dense model's (needs a latency table)"},
      {"latency_ms", "measured latency in milliseconds (needs a latency table)"},
      {"macs", "multiply-accumulates of the conv and linear layers, as a fraction of the dense model's"},
      {"params", "weights of the conv and linear layers, as a fraction of the dense model's"}};
  return kinds;
}

std::string target_problem(const options::RatioMap& target) {
  if (target.empty()) return {};
  std::string names;
  for (const auto& [k, meaning] : budget_kinds()) names += (names.empty() ? "" : ", ") + k;
  if (target.size() > 1) return "give one budget, not " + std::to_string(target.size()) + " (e.g. {\"latency\": 0.4})";
  const auto& [kind, value] = target.front();
  const auto it = std::find_if(budget_kinds().begin(), budget_kinds().end(), [&](const auto& k) { return k.first == kind; });
  if (it == budget_kinds().end()) return "budget kind \"" + kind + "\" does not exist; the kinds are " + names;
  if (kind == "latency_ms") return value > 0 ? "" : "latency_ms must be positive, got " + budget_number(value);
  if (!(value > 0 && value <= 1)) return kind + " is a fraction of the dense model's in (0, 1], got " + budget_number(value);
  return {};
}

namespace {

// The sites of `trace` with the candidate (or fixed width) of each dimension.
std::vector<CostSite> sites_of(const std::vector<measure::OpSite>& ops, const std::vector<Candidate>& candidates,
                           const measure::LatencyTable* table, const std::string& kind) {
  // Which candidate cuts each (tensor, dim), and how many indices along it one unit owns.
  std::map<std::pair<std::string, int64_t>, std::pair<int, int64_t>> cut_by;
  for (size_t ci = 0; ci < candidates.size(); ++ci) {
    const auto& grp = *candidates[ci].group;
    for (size_t m = 0; m < grp.members.size(); ++m) {
      cut_by[{grp.members[m].tensor, grp.members[m].dim}] = {static_cast<int>(ci), static_cast<int64_t>(grp.unit(0, m).size())};
    }
  }
  std::vector<CostSite> sites;
  for (const auto& op : ops) {
    CostSite s{&op};
    const auto dim = [&](int64_t d, int64_t width) {
      SiteDim out{-1, 1, width, width};
      if (const auto it = cut_by.find({op.weight, d}); it != cut_by.end() && op.resizable()) {
        out.cand = it->second.first;
        out.mult = it->second.second;
        out.original = candidates[static_cast<size_t>(out.cand)].original * out.mult;
      }
      return out;
    };
    s.out = dim(0, op.out_channels());
    s.in = op.layer() ? dim(1, op.in_channels()) : s.out;  // an activation's input is its output's width
    if (table) {
      s.table = table->site_of(op.name);
      TORCH_CHECK_VALUE(s.table >= 0, "pruning target ", kind, ": ", op.name, " is not in the latency table. "
                        "Fix: build the table from this model (its dense form) at the deployment batch");
      s.elements = static_cast<double>(table->sites()[static_cast<size_t>(s.table)].output_elements_per_channel());
    }
    sites.push_back(s);
  }
  return sites;
}

// Per candidate: the widths it may take, prefix sums of its sorted normalised scores (importance
// lost by a cut), and the sites it touches.
struct Ladders {
  std::vector<std::vector<int64_t>> levels;
  std::vector<std::vector<double>> prefix;
  std::vector<std::vector<size_t>> touching;
};

Ladders ladders_of(const std::vector<Candidate>& candidates, const std::vector<CostSite>& sites, bool latency,
                   const PrunerOptions& o, const Sensitivity* scan) {
  Ladders l;
  l.levels.resize(candidates.size());
  l.prefix.resize(candidates.size());
  l.touching.resize(candidates.size());
  for (size_t i = 0; i < sites.size(); ++i) {
    for (const SiteDim* d : {&sites[i].in, &sites[i].out}) {
      auto& t = l.touching[static_cast<size_t>(std::max(0, d->cand))];
      if (d->cand >= 0 && (t.empty() || t.back() != i)) t.push_back(i);
    }
  }
  for (size_t ci = 0; ci < candidates.size(); ++ci) {
    const auto& c = candidates[ci];
    l.levels[ci] = levels_of(c, sites, static_cast<int>(ci), latency, o);
    auto s = normalised_scores(c.scores);
    std::sort(s.begin(), s.end());
    l.prefix[ci].assign(s.size() + 1, 0.0);
    std::partial_sum(s.begin(), s.end(), l.prefix[ci].begin() + 1);
    if (o.allocation() != Allocation::sensitivity) continue;
    TORCH_CHECK_VALUE(scan, "allocation sensitivity needs a sensitivity scan of the model. Fix: "
                      "pruner.set_sensitivity(pruner.sensitivity(evaluate, ratios)); in a recipe, report.sensitivity_step "
                      "> 0; in Python, prune(..., sensitivity=libprune.sensitivity(model, x, evaluate))");
    const auto* row = scan->row(c.group->name());
    TORCH_CHECK_VALUE(row, "allocation sensitivity: group ", c.group->name(), " is not in the sensitivity scan (",
                      scan->rows.size(), " groups). Fix: scan the model this pruner cuts, with its options (a group "
                      "a norm normalises across is never scanned: use allocation importance there)");
    // The units cut since the scan come off the front of the row's curve; the criterion's scores,
    // far smaller, only break ties (a flat curve still cuts the least important units first).
    TORCH_CHECK_VALUE(c.group->size() <= row->size, "allocation sensitivity: group ", c.group->name(), " has ",
                      c.group->size(), " units and the scan saw ", row->size, ". Fix: scan the model this pruner cuts, "
                      "before its first cut");
    const double before = static_cast<double>(row->size - c.group->size());
    const double at = scan->predicted_drop(*row, before);
    for (size_t j = 0; j < l.prefix[ci].size(); ++j) {
      l.prefix[ci][j] = scan->predicted_drop(*row, before + static_cast<double>(j)) - at +
                        1e-6 * l.prefix[ci][j];
    }
  }
  return l;
}

struct BudgetCut {
  int cand = -1;
  int64_t keep = 0;
  double saved = 0;
};

// The cut, over every candidate and every lower width, with the least importance lost per cost saved.
BudgetCut cheapest_cut(const SiteCosts& costs, const Ladders& l, const std::vector<Candidate>& candidates,
                 std::vector<int64_t>& keep, double dense) {
  BudgetCut best;
  double best_rate = std::numeric_limits<double>::infinity();
  for (size_t ci = 0; ci < candidates.size(); ++ci) {
    double before = 0;
    for (size_t i : l.touching[ci]) before += costs.site(i, keep);
    const int64_t now = keep[ci], n = candidates[ci].group->size();
    for (int64_t k : l.levels[ci]) {
      if (k >= now) break;
      keep[ci] = k;
      double after = 0;
      for (size_t i : l.touching[ci]) after += costs.site(i, keep);
      keep[ci] = now;
      const double saved = before - after;
      if (saved <= 1e-12 * std::max(1.0, dense)) continue;  // the table says this width costs the same
      const double lost = l.prefix[ci][static_cast<size_t>(n - k)] - l.prefix[ci][static_cast<size_t>(n - now)];
      const double rate = lost / saved;
      if (rate < best_rate || (rate == best_rate && saved > best.saved)) best = {static_cast<int>(ci), k, saved}, best_rate = rate;
    }
  }
  return best;
}

}  // namespace

std::vector<std::string> keep_within_budget(std::vector<Candidate>& candidates, const graph::Trace& trace, const measure::LatencyTable* table,
                                            const PrunerOptions& o, double progress, std::pair<double, double> measured,
                                            const Sensitivity* scan) {
  const auto& [kind, value] = o.target().front();
  const bool latency = is_latency_target(o.target());
  TORCH_CHECK_VALUE(!latency || table, "pruning target ", kind,
                    " needs a latency table measured on the deployment machine. Fix: "
                    "pruner.set_latency_table(LatencyTable::build(model, input at the deployment batch)), or in Python "
                    "prune(..., target=..., latency_table=libprune.latency_table(model, inputs))");
  const auto ops = measure::op_sites(trace);
  const SiteCosts costs(kind, sites_of(ops, candidates, latency ? table : nullptr, kind), latency ? table : nullptr);
  const auto ladders = ladders_of(candidates, costs.sites(), latency, o, scan);
  std::vector<int64_t> keep(candidates.size()), original(candidates.size());
  for (size_t ci = 0; ci < candidates.size(); ++ci) keep[ci] = candidates[ci].group->size(), original[ci] = candidates[ci].original;
  const double dense = costs.total(original);
  const double final_budget = kind == "latency_ms" ? value : value * dense;
  const double asked = dense - std::clamp(progress, 0.0, 1.0) * (dense - final_budget);
  double budget = asked;
  std::string calibrated;
  const auto [p1, m1] = measured;
  if (latency && p1 > 0 && p1 < dense * 0.99 && m1 > 0 && m1 < dense * 0.99) {
    // Thin models run slower than their layers alone say: the measured / predicted ratio of the model
    // as it is scales the budget of this cut (it grows with the cut, so this still errs low).
    budget = asked * std::clamp(p1 / m1, 0.5, 2.0);
    calibrated = "; calibrated on the model as it was (predicted " + budget_number(p1) + " ms, measured " + budget_number(m1) +
                 " ms): predicted budget " + budget_number(budget) + " ms";
  }
  const std::string unit = latency ? " ms" : kind == "macs" ? " MACs" : " weights";
  const auto start = keep;
  double cost = costs.total(keep);
  while (cost > budget * (1 + 1e-9)) {
    const BudgetCut cut = cheapest_cut(costs, ladders, candidates, keep, dense);
    if (cut.cand < 0 && budget < asked) {
      // Only the calibration put the budget out of reach. Cutting to the floor would trade away far
      // more importance than the latency it buys: aim at the budget as asked instead.
      calibrated += ", below the smallest reachable (" + budget_number(cost) + " ms): cut to the uncalibrated budget";
      budget = asked;
      keep = start;
      cost = costs.total(keep);
      continue;
    }
    TORCH_CHECK_VALUE(cut.cand >= 0, "pruning target {\"", kind, "\": ", budget_number(value), "} (", budget_number(budget), unit,
                      ") cannot be reached: the smallest this model reaches is ", budget_number(cost), unit, " (",
                      budget_number(cost / dense), " of the dense ", budget_number(dense), unit,
                      "), with every free group at min_channels / max_ratio or where a smaller width saves nothing; "
                      "pinned and ignored layers", latency ? " and the fixed part (" + budget_number(table->rest_ms()) + " ms)" : "",
                      " stay. Fix: ask for at least ", kind == "latency_ms" ? budget_number(cost) : budget_number(cost / dense),
                      ", or lower min_channels, raise max_ratio or free ignored layers. Nothing was changed");
    cost -= cut.saved;
    keep[static_cast<size_t>(cut.cand)] = cut.keep;
  }
  std::string drop;
  if (o.allocation() == Allocation::sensitivity) {
    double sum = 0;
    for (size_t ci = 0; ci < candidates.size(); ++ci) {
      const auto* row = scan->row(candidates[ci].group->name());
      sum += scan->predicted_drop(*row, static_cast<double>(row->size - keep[ci]));
    }
    drop = "; allocated by sensitivity: predicted drop since the scan " + budget_number(sum) +
           " (the scan's one-group drops added)";
  }
  for (size_t ci = 0; ci < candidates.size(); ++ci) candidates[ci].keep = keep[ci];
  return {"budget " + kind + " " + budget_number(value) + (progress < 1 ? " (this step: " + budget_number(asked / dense) + " of dense)" : "") +
          ": predicted " + budget_number(cost) + unit + " = " + budget_number(cost / dense) + " of the dense " + budget_number(dense) + unit +
          calibrated + drop};
}

}  // namespace libprune::prune::detail
