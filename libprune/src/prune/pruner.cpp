#include "libprune/prune/pruner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <set>

namespace libprune::prune {
namespace {

// LIBPRUNE_PROFILE=1 prints each phase of step() to stderr.
class PhaseTimer {
 public:
  PhaseTimer() : on_(std::getenv("LIBPRUNE_PROFILE") != nullptr), last_(std::chrono::steady_clock::now()) {}
  void mark(const char* phase) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr, "libprune: %-8s %8.3f s\n", phase, std::chrono::duration<double>(now - last_).count());
    last_ = now;
  }

 private:
  bool on_;
  std::chrono::steady_clock::time_point last_;
};

// Units to keep of a group that had `original` units, after removing `remove_fraction` of them.
int64_t keep_count(int64_t original, double remove_fraction, const PrunerOptions& o) {
  int64_t keep = original - static_cast<int64_t>(std::floor(static_cast<double>(original) * remove_fraction + 1e-9));
  if (o.round_to() > 1) keep = (keep + o.round_to() - 1) / o.round_to() * o.round_to();
  keep = std::max(keep, o.min_channels());
  return std::min(keep, original);
}

}  // namespace

Pruner::Pruner(std::shared_ptr<torch::nn::Module> model, graph::Forward example_forward, PrunerOptions options)
    : Pruner(std::make_shared<layers::ModuleAccess>(std::move(model)), std::move(example_forward), std::move(options)) {}

Pruner::Pruner(std::shared_ptr<layers::ModelAccess> model, graph::Forward example_forward, PrunerOptions options)
    : model_(std::move(model)), forward_(std::move(example_forward)), options_(std::move(options)) {
  TORCH_CHECK_VALUE(model_, "Pruner: the model is null. Fix: pass the model to prune");
  options_.validate();
  for (const auto& [pattern, r] : options_.overrides()) overrides_.emplace_back(pattern, std::regex(pattern));
  importance_ = importance::ImportanceOptions(options_.importance())
                    .reduction(options_.reduction())
                    .normalize(options_.normalize())
                    .seed(options_.seed());
  std::set<std::string> modules;
  for (const auto& m : model_->module_names()) modules.insert(m);
  for (const auto& name : options_.ignored_layers()) {
    TORCH_CHECK_VALUE(modules.count(name) && !name.empty(), "ignored module \"", name,
                      "\" is not in the model. Fix: use a name from model.named_modules(), such as \"fc\" or "
                      "\"classifier.6\"");
  }
}

graph::Trace Pruner::trace(const layers::ModelTensors& tensors) const {
  const auto eval = model_->eval_scope();
  return graph::Trace::capture(forward_, tensors.parameters);
}

void Pruner::record_sizes() {
  const auto g = graph();
  for (const auto& grp : g.groups()) original_sizes_.emplace(grp.name(), grp.size());
}

void Pruner::set_ratio(double ratio) {
  auto next = options_;
  next.ratio(ratio).validate();
  options_ = std::move(next);
}

graph::DependencyGraph Pruner::graph() const {
  const layers::ModelTensors tensors(*model_);
  return build_graph(trace(tensors), tensors);
}

graph::DependencyGraph Pruner::build_graph(const graph::Trace& traced, const layers::ModelTensors& tensors) const {
  graph::DependencyGraph g(traced, tensors.companions);
  const auto tied = model_->tied_tensors();
  for (size_t gi = 0; gi < g.groups().size(); ++gi) {
    const auto& grp = g.groups()[gi];
    for (const auto& t : tied) {
      if (std::any_of(grp.members.begin(), grp.members.end(),
                      [&](const graph::Member& m) { return m.tensor == t.tensor && m.dim == t.dim; })) {
        g.pin(gi, t.reason);
      }
    }
    if (const auto it = verification_pinned_.find(grp.name()); it != verification_pinned_.end()) {
      g.pin(gi, it->second);
    }
    if (grp.hidden && !options_.prune_hidden()) {
      g.pin(gi, "hidden size (embedding dim): LayerNorm and the residual stream share it, so cutting it changes every "
                "block; kept by default. Fix: set prune_hidden (PrunerOptions::prune_hidden, prune(..., "
                "prune_hidden=True)) to cut it");
    }
  }
  return g;
}

layers::PruningPlan Pruner::plan() const {
  const layers::ModelTensors tensors(*model_);
  return make_plan(build_graph(trace(tensors), tensors), tensors, {});
}

namespace {

// A group the plan may cut: its units' scores, the size ratios count against, its ratio, and the
// units it keeps.
struct Candidate {
  size_t index;
  const graph::Group* group;
  std::vector<double> scores;
  int64_t original = 0;
  double ratio = 0;
  int64_t keep = 0;
};

// The modules whose outputs a group cuts (members along dim 0): what ignored_layers and the
// per-layer overrides name.
std::vector<std::string> output_modules(const graph::Group& grp) {
  std::vector<std::string> out;
  for (const auto& m : grp.members) {
    const auto dot = m.tensor.rfind('.');
    if (m.dim == 0 && dot != std::string::npos) out.push_back(m.tensor.substr(0, dot));
  }
  return out;
}

// Global ranking: scores divided by their group's mean, so layers of different scale compete
// fairly. The total to remove counts against the original sizes; no group goes below min_channels
// or loses more than max_ratio of its original units.
void keep_globally(std::vector<Candidate>& candidates, const PrunerOptions& o) {
  std::vector<std::tuple<double, size_t, size_t>> all;
  std::vector<int64_t> floor_keep(candidates.size());
  int64_t total = 0, total_original = 0;
  for (size_t ci = 0; ci < candidates.size(); ++ci) {
    const auto& s = candidates[ci].scores;
    const double mean = std::accumulate(s.begin(), s.end(), 0.0) / std::max<size_t>(1, s.size());
    for (size_t u = 0; u < s.size(); ++u) all.emplace_back(mean > 0 ? s[u] / mean : 0.0, ci, u);
    total += static_cast<int64_t>(s.size());
    total_original += candidates[ci].original;
    floor_keep[ci] = keep_count(candidates[ci].original, o.max_ratio(), o);  // min_channels included
  }
  std::sort(all.begin(), all.end());
  int64_t to_remove = static_cast<int64_t>(std::floor(static_cast<double>(total_original) * o.ratio() + 1e-9)) -
                      (total_original - total);
  for (const auto& [score, ci, u] : all) {
    if (to_remove <= 0) break;
    auto& c = candidates[ci];
    if (c.keep > floor_keep[ci]) {
      --c.keep;
      --to_remove;
    }
  }
  for (auto& c : candidates) {
    if (o.round_to() > 1) c.keep = std::min(c.group->size(), (c.keep + o.round_to() - 1) / o.round_to() * o.round_to());
  }
}

// The plan that removes each candidate's lowest-scoring units down to its keep count. Indices
// removed are gathered per (tensor, dim): one lookup per member of a group, not per unit.
layers::PruningPlan cuts_of(const std::vector<Candidate>& candidates, const std::map<std::string, torch::Tensor>& tensors,
                            std::vector<size_t>* used) {
  std::map<std::pair<std::string, int64_t>, std::vector<int64_t>> removed;
  layers::PruningPlan plan;
  for (const auto& c : candidates) {
    const int64_t n_remove = c.group->size() - c.keep;
    if (n_remove <= 0) continue;
    std::vector<size_t> order(c.scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return c.scores[a] < c.scores[b]; });
    for (size_t m = 0; m < c.group->members.size(); ++m) {
      auto& gone = removed[{c.group->members[m].tensor, c.group->members[m].dim}];
      for (int64_t r = 0; r < n_remove; ++r) {
        const auto idx = c.group->unit(order[static_cast<size_t>(r)], m);
        gone.insert(gone.end(), idx.begin(), idx.end());
      }
    }
    plan.groups.push_back({c.group->name(), {c.group->size(), c.keep}});
    if (used) used->push_back(c.index);
  }
  for (const auto& [key, gone] : removed) {
    layers::TensorCut cut;
    cut.tensor = key.first;
    cut.dim = key.second;
    cut.original_size = tensors.at(key.first).size(key.second);
    std::vector<char> dropped(static_cast<size_t>(cut.original_size), 0);
    for (int64_t i : gone) dropped[static_cast<size_t>(i)] = 1;
    for (int64_t i = 0; i < cut.original_size; ++i) {
      if (!dropped[static_cast<size_t>(i)]) cut.keep.push_back(i);
    }
    plan.cuts.push_back(std::move(cut));
  }
  return plan;
}

}  // namespace

layers::PruningPlan Pruner::make_plan(const graph::DependencyGraph& g, const layers::ModelTensors& snapshot,
                                      const std::set<size_t>& skip, std::vector<size_t>* used) const {
  std::map<std::string, torch::Tensor> params(snapshot.parameters.begin(), snapshot.parameters.end());
  // Companions (running statistics, extension state) are cut with their group but never score.
  for (const auto& c : snapshot.companions) params.erase(c.tensor);
  const std::set<std::string> ignored(options_.ignored_layers().begin(), options_.ignored_layers().end());
  std::vector<Candidate> candidates;
  importance::MagnitudeCache magnitudes;
  for (size_t gi = 0; gi < g.groups().size(); ++gi) {
    const auto& grp = g.groups()[gi];
    const auto modules = output_modules(grp);
    if (grp.pinned || skip.count(gi) ||
        std::any_of(modules.begin(), modules.end(), [&](const std::string& m) { return ignored.count(m) > 0; })) {
      continue;
    }
    Candidate c{gi, &grp, importance::score(grp, params, importance_, gradients_, &magnitudes)};
    c.original = std::max(grp.size(), original_sizes_.emplace(grp.name(), grp.size()).first->second);
    c.ratio = ratio_of(modules);
    c.keep = grp.size();
    candidates.push_back(std::move(c));
  }
  if (options_.global_pruning()) {
    keep_globally(candidates, options_);
  } else {
    for (auto& c : candidates) c.keep = std::min(c.group->size(), keep_count(c.original, c.ratio, options_));
  }
  return cuts_of(candidates, snapshot.by_name(), used);
}

// The first override naming a module whose outputs the group cuts (like ignored_layers), else the ratio.
double Pruner::ratio_of(const std::vector<std::string>& modules) const {
  for (size_t k = 0; k < overrides_.size(); ++k) {
    for (const auto& module : modules) {
      if (overrides_[k].first == module || std::regex_match(module, overrides_[k].second)) {
        return options_.overrides()[k].second;
      }
    }
  }
  return options_.ratio();
}

std::vector<graph::Shape> Pruner::run_shapes() const {
  const auto eval = model_->eval_scope();
  torch::NoGradGuard no_grad;
  std::vector<graph::Shape> shapes;
  for (const auto& t : forward_()) shapes.push_back(t.defined() ? t.sizes().vec() : graph::Shape{});
  return shapes;
}

layers::PruningPlan Pruner::step(torch::optim::Optimizer* optimizer) {
  if (!optimizer) return step(static_cast<const layers::OptimizerView*>(nullptr));
  const auto view = layers::view_of(*optimizer, *model_);
  return step(&view);
}

layers::PruningPlan Pruner::step(const layers::OptimizerView* optimizer) {
  verification_pins_.clear();
  PhaseTimer timer;
  const layers::ModelTensors tensors(*model_);
  const auto traced = trace(tensors);
  timer.mark("trace");
  const auto expected = traced.output_shapes();
  const graph::DependencyGraph g = build_graph(traced, tensors);
  timer.mark("group");
  std::vector<size_t> cut_groups;
  layers::PruningPlan plan = make_plan(g, tensors, {}, &cut_groups);
  timer.mark("plan");
  if (plan.empty()) {
    history_.push_back(plan);
    return plan;
  }
  layers::validate_plan(tensors, plan, optimizer);

  auto verified = [&]() {
    try {
      return run_shapes() == expected;
    } catch (const std::exception&) {
      return false;
    }
  };

  auto rollback = layers::apply_cuts(*model_, tensors, plan, optimizer);
  timer.mark("apply");
  const bool ok = !options_.verify() || verified();
  timer.mark("verify");
  if (!ok) {
    // Something in the model's own code (a hard-coded reshape, say) broke. Undo everything, find
    // the groups that break it one by one, pin them, and cut the rest.
    rollback.run();
    std::set<size_t> bad;
    for (size_t gi : cut_groups) {
      std::set<size_t> others(cut_groups.begin(), cut_groups.end());
      others.erase(gi);
      auto single = make_plan(g, tensors, others);
      if (single.empty()) continue;
      auto undo = layers::apply_cuts(*model_, tensors, single, optimizer);
      if (!verified()) {
        bad.insert(gi);
        const std::string why = "verification: the forward failed or changed its output shape after cutting it (the "
                                "model's own code fixes this width). Fix: add its layer to ignored_layers to skip the check";
        verification_pins_.push_back(g.groups()[gi].name() + ": " + why);
        verification_pinned_[g.groups()[gi].name()] = why;
      }
      undo.run();
    }
    plan = make_plan(g, tensors, bad);
    if (!plan.empty()) {
      rollback = layers::apply_cuts(*model_, tensors, plan, optimizer);
      if (!verified()) {
        rollback.run();
        TORCH_CHECK(false, "pruning: the model fails verification even with the culprit groups pinned; nothing was "
                    "changed. Fix: add the failing layers to ignored_layers");
      }
    }
  }
  rollback.release();
  history_.push_back(plan);
  return plan;
}

}  // namespace libprune::prune
