#include "libprune/prune/pruner.h"

#include "budget.h"
#include "candidates.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <set>

namespace libprune::prune {

using detail::Candidate;
using detail::cuts_of;
using detail::keep_count;
using detail::normalised_scores;

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

// Units a ratio alone leaves of `original` (before rounding and min_channels).
int64_t asked_keep(int64_t original, double remove_fraction) {
  return original - static_cast<int64_t>(std::floor(static_cast<double>(original) * remove_fraction + 1e-9));
}

}  // namespace

int64_t detail::keep_count(int64_t original, double remove_fraction, const PrunerOptions& o) {
  int64_t keep = asked_keep(original, remove_fraction);
  if (o.round_to() > 1) keep = (keep + o.round_to() - 1) / o.round_to() * o.round_to();
  keep = std::max(keep, o.min_channels());
  return std::min(keep, original);
}

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

void Pruner::set_progress(double progress) {
  TORCH_CHECK_VALUE(progress >= 0 && progress <= 1, "Pruner::set_progress: progress is in [0, 1], got ", progress);
  progress_ = progress;
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
  const auto traced = trace(tensors);
  return make_plan(build_graph(traced, tensors), traced, tensors, {});
}

namespace {

// The local keep count of `c` at its ratio; marks it floored when min_channels held it back.
int64_t keep_locally(Candidate& c, const PrunerOptions& o) {
  if (asked_keep(c.original, c.ratio) < o.min_channels()) c.floored = true;
  return std::min(c.group->size(), keep_count(c.original, c.ratio, o));
}

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
    const auto s = normalised_scores(candidates[ci].scores);
    for (size_t u = 0; u < s.size(); ++u) all.emplace_back(s[u], ci, u);
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
    } else {
      c.floored = true;
    }
  }
  for (auto& c : candidates) {
    if (o.round_to() > 1) c.keep = std::min(c.group->size(), (c.keep + o.round_to() - 1) / o.round_to() * o.round_to());
  }
}

}  // namespace

namespace detail {

// Indices removed are gathered per (tensor, dim): one lookup per member of a group, not per unit.

layers::PruningPlan cuts_of(const std::vector<Candidate>& candidates, const std::map<std::string, torch::Tensor>& tensors) {
  std::map<std::pair<std::string, int64_t>, std::vector<int64_t>> removed;
  layers::PruningPlan plan;
  double kept = 0, all = 0;
  for (const auto& c : candidates) {
    const int64_t n_remove = c.group->size() - c.keep;
    std::vector<size_t> order(c.scores.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return c.scores[a] < c.scores[b]; });
    // Groups with a negative score (a custom criterion's) or none above 0 have no share to report.
    const auto s = normalised_scores(c.scores);
    const bool shares = std::all_of(c.scores.begin(), c.scores.end(), [](double v) { return v >= 0; }) &&
                        std::any_of(s.begin(), s.end(), [](double v) { return v > 0; });
    for (size_t r = static_cast<size_t>(std::max<int64_t>(0, n_remove)); shares && r < order.size(); ++r) kept += s[order[r]];
    if (shares) all += static_cast<double>(s.size());
    if (n_remove <= 0) continue;
    for (size_t m = 0; m < c.group->members.size(); ++m) {
      auto& gone = removed[{c.group->members[m].tensor, c.group->members[m].dim}];
      for (int64_t r = 0; r < n_remove; ++r) {
        const auto idx = c.group->unit(order[static_cast<size_t>(r)], m);
        gone.insert(gone.end(), idx.begin(), idx.end());
      }
    }
    plan.groups.push_back({c.group->name(), {c.group->size(), c.keep}});
  }
  for (const auto& c : candidates) {
    if (!c.floored) continue;
    plan.notes.push_back("group " + c.group->name() + ": the ratio would remove more of its " +
                         std::to_string(c.original) + " units than min_channels and max_ratio allow; it keeps " +
                         std::to_string(c.keep));
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
  if (all > 0) plan.importance_kept = std::clamp(kept / all, 0.0, 1.0);  // rounding may pass 1 when nothing is cut
  return plan;
}

}  // namespace detail

std::vector<Candidate> Pruner::candidates_of(const graph::DependencyGraph& g, const layers::ModelTensors& snapshot,
                                             const std::set<size_t>& skip) const {
  std::map<std::string, torch::Tensor> params(snapshot.parameters.begin(), snapshot.parameters.end());
  // Companions (running statistics, extension state) are cut with their group but never score.
  for (const auto& c : snapshot.companions) params.erase(c.tensor);
  const std::set<std::string> ignored(options_.ignored_layers().begin(), options_.ignored_layers().end());
  std::vector<Candidate> candidates;
  importance::MagnitudeCache magnitudes;
  for (size_t gi = 0; gi < g.groups().size(); ++gi) {
    const auto& grp = g.groups()[gi];
    auto modules = output_modules(grp);
    if (grp.pinned || skip.count(gi) ||
        std::any_of(modules.begin(), modules.end(), [&](const std::string& m) { return ignored.count(m) > 0; })) {
      continue;
    }
    Candidate c{&grp, importance::score(grp, params, importance_, gradients_, &magnitudes)};
    c.original = std::max(grp.size(), original_sizes_.emplace(grp.name(), grp.size()).first->second);
    c.ratio = ratio_of(modules);
    c.overridden = std::any_of(modules.begin(), modules.end(), [&](const std::string& m) {
      return std::any_of(overrides_.begin(), overrides_.end(),
                         [&](const auto& o) { return o.first == m || std::regex_match(m, o.second); });
    });
    c.keep = grp.size();
    for (auto& module : modules) {  // each once, in member order
      if (std::find(c.modules.begin(), c.modules.end(), module) == c.modules.end()) c.modules.push_back(std::move(module));
    }
    // Layers (a weight of 2 or more dims: conv, linear) before their norms.
    std::stable_partition(c.modules.begin(), c.modules.end(), [&](const std::string& m) {
      const auto w = params.find(m + ".weight");
      return w != params.end() && w->second.dim() >= 2;
    });
    candidates.push_back(std::move(c));
  }
  return candidates;
}

layers::PruningPlan Pruner::make_plan(const graph::DependencyGraph& g, const graph::Trace& traced,
                                      const layers::ModelTensors& snapshot, const std::set<size_t>& skip) const {
  auto candidates = candidates_of(g, snapshot, skip);
  if (!options_.target().empty()) {
    auto notes = detail::keep_within_budget(candidates, traced, latency_table_.get(), options_, progress_,
                                            latency_point(traced), sensitivity_.get());
    auto plan = cuts_of(candidates, snapshot.by_name());
    char kept[64];
    std::snprintf(kept, sizeof(kept), "; importance kept %.1f%% of the free groups'", 100 * plan.importance_kept);
    if (plan.importance_kept >= 0) notes.front() += kept;
    plan.notes.insert(plan.notes.begin(), notes.begin(), notes.end());
    return plan;
  }
  if (options_.global_pruning()) {
    // Groups an override names keep their own ratio; the rest compete for the global ratio.
    std::vector<Candidate> pooled, fixed;
    for (auto& c : candidates) (c.overridden ? fixed : pooled).push_back(std::move(c));
    keep_globally(pooled, options_);
    for (auto& c : fixed) c.keep = keep_locally(c, options_);
    candidates = std::move(pooled);
    for (auto& c : fixed) candidates.push_back(std::move(c));
  } else {
    for (auto& c : candidates) c.keep = keep_locally(c, options_);
  }
  return cuts_of(candidates, snapshot.by_name());
}

std::pair<double, double> Pruner::latency_point(const graph::Trace& traced) const {
  const auto& target = options_.target();
  if (!latency_probe_ || !latency_table_ || !is_latency_target(target)) return {0, 0};
  const double predicted = latency_table_->predict_ms(traced);
  if (predicted > 0.99 * latency_table_->dense_ms()) return {0, 0};  // still dense: nothing to learn
  return {predicted, latency_probe_()};
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

layers::PruningPlan Pruner::step(torch::optim::Optimizer* optimizer) {
  if (!optimizer) return step(static_cast<const layers::OptimizerView*>(nullptr));
  const auto view = layers::view_of(*optimizer, *model_);
  return step(&view);
}

// Applies `plan` and checks it (layers::apply_checked): groups a norm normalises across are checked
// for shapes only.
layers::CheckedCut Pruner::checked_cut(const graph::DependencyGraph& g, const layers::ModelTensors& tensors,
                                       const layers::PruningPlan& plan, const layers::OptimizerView* optimizer) const {
  if (!options_.verify_values()) return layers::apply_shape_checked(*model_, tensors, forward_, plan, shapes_, optimizer);
  if (std::none_of(g.groups().begin(), g.groups().end(), [](const graph::Group& grp) { return grp.normalised; })) {
    return layers::apply_checked(*model_, tensors, forward_, plan, nullptr, optimizer);
  }
  const auto cuts = layers::split_by_group(g, plan);
  std::vector<const layers::PruningPlan*> exact;
  for (const auto& c : cuts) {
    if (!g.groups()[c.group].normalised) exact.push_back(&c.plan);
  }
  if (exact.size() == cuts.size()) return layers::apply_checked(*model_, tensors, forward_, plan, nullptr, optimizer);
  const auto part = layers::merge_plans(exact);
  return layers::apply_checked(*model_, tensors, forward_, plan, &part, optimizer);
}

layers::PruningPlan Pruner::step(const layers::OptimizerView* optimizer) {
  verification_pins_.clear();
  PhaseTimer timer;
  const layers::ModelTensors tensors(*model_);
  const auto traced = trace(tensors);
  timer.mark("trace");
  shapes_ = traced.output_shapes();
  const graph::DependencyGraph g = build_graph(traced, tensors);
  timer.mark("group");
  layers::PruningPlan plan = make_plan(g, traced, tensors, {});
  timer.mark("plan");
  if (plan.empty()) {
    history_.push_back(plan);
    return plan;
  }
  layers::validate_plan(tensors, plan, optimizer);
  if (!options_.verify()) {
    layers::apply_cuts(*model_, tensors, plan, optimizer).release();
    history_.push_back(plan);
    return plan;
  }
  // The cut must run, keep the output shapes and compute what the dense model computes with the
  // same channels silenced (layers/exact.h).
  auto checked = checked_cut(g, tensors, plan, optimizer);
  timer.mark("apply+verify");
  if (!checked.failure.empty()) {
    // Something in the model's own code (a hard-coded reshape, a head count no adapter knows, a
    // softmax across the channels) broke or changed the result. Undo everything, find the groups
    // whose own cut breaks it, pin them, and cut the rest.
    checked.rollback.run();
    std::set<size_t> bad;
    for (const auto& c : layers::split_by_group(g, plan)) {
      auto single = checked_cut(g, tensors, c.plan, optimizer);
      single.rollback.run();
      if (single.failure.empty()) continue;
      bad.insert(c.group);
      const std::string why = "verification: " + single.failure +
                              ". The model's own code fixes or reads this width in a way the graph cannot see. Fix: "
                              "add its layer to ignored_layers to skip the check";
      verification_pins_.push_back(g.groups()[c.group].name() + ": " + why);
      verification_pinned_[g.groups()[c.group].name()] = why;
    }
    plan = make_plan(g, traced, tensors, bad);
    if (!plan.empty()) {
      checked = checked_cut(g, tensors, plan, optimizer);
      if (!checked.failure.empty()) {
        checked.rollback.run();
        TORCH_CHECK(false, "pruning: the model fails verification even with the culprit groups pinned (",
                    checked.failure, "); nothing was changed. Fix: add the failing layers to ignored_layers");
      }
    }
  }
  checked.rollback.release();
  history_.push_back(plan);
  return plan;
}

}  // namespace libprune::prune
