#include "libprune/layers/exact.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

namespace libprune::layers {
namespace {

bool name_ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string shapes_of(const Outputs& outs) {
  std::ostringstream s;
  for (size_t i = 0; i < outs.size(); ++i) s << (i ? ", " : "") << (outs[i].defined() ? outs[i].sizes() : c10::IntArrayRef{});
  return "[" + s.str() + "]";
}

}  // namespace

Overwrites::~Overwrites() {
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) it->first.set_data(it->second);
}

void Overwrites::swap(torch::Tensor t, const torch::Tensor& value) {
  saved_.emplace_back(t, t.detach());
  t.set_data(value);
}

void Overwrites::quantisers_off(const ModelTensors& tensors) {
  for (const auto& [name, b] : tensors.buffers) {
    if (name_ends_with(name, "fake_quant_enabled") || name_ends_with(name, "observer_enabled")) {
      swap(b, torch::zeros_like(b));
    }
  }
}

void Overwrites::mask(const ModelTensors& tensors, const PruningPlan& plan) {
  std::set<std::string> companions;
  for (const auto& c : tensors.companions) companions.insert(c.tensor);
  const std::map<std::string, torch::Tensor> params(tensors.parameters.begin(), tensors.parameters.end());
  // One mask per parameter: 0 at every removed index of every dim the plan cuts, 1 elsewhere,
  // laid out to broadcast; the masked copy is one pass over the parameter.
  std::map<std::string, torch::Tensor> masks;
  for (const auto& c : plan.cuts) {
    const auto it = params.find(c.tensor);
    if (it == params.end() || companions.count(c.tensor) || static_cast<int64_t>(c.keep.size()) == c.original_size) {
      continue;
    }
    std::vector<int64_t> shape(static_cast<size_t>(it->second.dim()), 1);
    shape[static_cast<size_t>(c.dim)] = c.original_size;
    auto m = torch::zeros(shape, it->second.options().device(torch::kCPU).requires_grad(false));
    m.view({-1}).index_fill_(0, torch::tensor(c.keep, torch::kLong), 1);
    auto& total = masks[c.tensor];
    total = total.defined() ? total * m : m;
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, m] : masks) {
    const auto& t = params.at(name);
    swap(t, t.detach().mul(m.to(t.device())));
  }
}

Outputs exact_outputs(ModelAccess& model, const ModelTensors& tensors, const graph::Forward& forward,
                      const PruningPlan* plan) {
  Overwrites overwrites;
  overwrites.quantisers_off(tensors);
  if (plan) overwrites.mask(tensors, *plan);
  const auto eval = model.eval_scope();
  torch::NoGradGuard no_grad;
  Outputs outs = forward();
  for (auto& o : outs) {
    if (o.defined()) o = o.detach().clone();  // a view of a parameter would change on restore
  }
  return outs;
}

OutputDifference output_difference(const Outputs& expected, const Outputs& got) {
  OutputDifference d;
  const auto fail = [&](const std::string& problem) {
    d.worst = std::numeric_limits<double>::infinity();
    d.problem = problem;
    return d;
  };
  if (expected.size() != got.size()) return fail("the forward returns " + std::to_string(got.size()) + " outputs, not " + std::to_string(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto &e = expected[i], &g = got[i];
    if (e.defined() != g.defined() || (e.defined() && (e.sizes() != g.sizes() || e.scalar_type() != g.scalar_type()))) {
      return fail("output shapes " + shapes_of(got) + " differ from the dense model's " + shapes_of(expected));
    }
    if (!e.defined() || e.numel() == 0) continue;
    if (!e.is_floating_point()) {
      if (!torch::equal(e, g)) return fail("integer output " + std::to_string(i) + " differs");
      continue;
    }
    const auto ed = e.to(torch::kDouble), gd = g.to(torch::kDouble).to(e.device());
    const auto finite = torch::isfinite(ed);
    if (torch::logical_and(finite, torch::logical_not(torch::isfinite(gd))).any().item<bool>()) {
      return fail("output " + std::to_string(i) + " is not finite where the dense model's is");
    }
    const auto zero = torch::zeros({}, ed.options());
    const double scale = torch::where(finite, ed.abs(), zero).max().item<double>();
    const double diff = torch::where(finite, (gd - ed).abs(), zero).max().item<double>();
    d.worst = std::max(d.worst, scale > 0 ? diff / scale : diff);
  }
  return d;
}

std::vector<GroupCut> split_by_group(const graph::DependencyGraph& graph, const PruningPlan& plan) {
  std::map<std::pair<std::string, int64_t>, std::vector<char>> kept;  // (tensor, dim) -> kept flags
  std::map<std::pair<std::string, int64_t>, int64_t> sizes;
  for (const auto& c : plan.cuts) {
    auto& k = kept[{c.tensor, c.dim}];
    k.assign(static_cast<size_t>(c.original_size), 0);
    for (int64_t i : c.keep) k[static_cast<size_t>(i)] = 1;
    sizes[{c.tensor, c.dim}] = c.original_size;
  }
  std::vector<GroupCut> out;
  for (size_t gi = 0; gi < graph.groups().size(); ++gi) {
    const auto& g = graph.groups()[gi];
    if (g.members.empty()) continue;
    const auto first = kept.find({g.members[0].tensor, g.members[0].dim});
    if (first == kept.end()) continue;
    // A unit goes when the plan drops its indices along the first member.
    std::vector<size_t> gone;
    for (size_t u = 0; u < static_cast<size_t>(g.size()); ++u) {
      const auto idx = g.unit(u, 0);
      if (!idx.empty() && !first->second[static_cast<size_t>(idx[0])]) gone.push_back(u);
    }
    if (gone.empty()) continue;
    GroupCut cut{gi, {}};
    for (size_t m = 0; m < g.members.size(); ++m) {
      const auto key = std::make_pair(g.members[m].tensor, g.members[m].dim);
      const auto size = sizes.count(key) ? sizes[key] : -1;
      if (size < 0) continue;  // a member the plan leaves alone: the plan is not this graph's
      std::vector<char> keep(static_cast<size_t>(size), 1);
      for (size_t u : gone) {
        for (int64_t i : g.unit(u, m)) keep[static_cast<size_t>(i)] = 0;
      }
      TensorCut tc{key.first, key.second, size, {}};
      for (int64_t i = 0; i < size; ++i) {
        if (keep[static_cast<size_t>(i)]) tc.keep.push_back(i);
      }
      cut.plan.cuts.push_back(std::move(tc));
    }
    cut.plan.groups.push_back({g.name(), {g.size(), g.size() - static_cast<int64_t>(gone.size())}});
    out.push_back(std::move(cut));
  }
  return out;
}

PruningPlan merge_plans(const std::vector<const PruningPlan*>& plans) {
  std::map<std::pair<std::string, int64_t>, std::vector<char>> kept;
  PruningPlan out;
  for (const auto* p : plans) {
    for (const auto& c : p->cuts) {
      auto [it, fresh] = kept.try_emplace({c.tensor, c.dim}, static_cast<size_t>(c.original_size), 1);
      std::vector<char> mine(static_cast<size_t>(c.original_size), 0);
      for (int64_t i : c.keep) mine[static_cast<size_t>(i)] = 1;
      for (size_t i = 0; i < mine.size(); ++i) it->second[i] = static_cast<char>(it->second[i] && mine[i]);
    }
    out.groups.insert(out.groups.end(), p->groups.begin(), p->groups.end());
  }
  for (const auto& [key, flags] : kept) {
    TensorCut c{key.first, key.second, static_cast<int64_t>(flags.size()), {}};
    for (size_t i = 0; i < flags.size(); ++i) {
      if (flags[i]) c.keep.push_back(static_cast<int64_t>(i));
    }
    out.cuts.push_back(std::move(c));
  }
  return out;
}

namespace {

std::vector<graph::Shape> shapes_of_outputs(const Outputs& outs) {
  std::vector<graph::Shape> shapes;
  for (const auto& o : outs) shapes.push_back(o.defined() ? o.sizes().vec() : graph::Shape{});
  return shapes;
}

// Runs the forward on the cut model and compares it: with `expected`, values within `tolerance`
// (the worst difference goes to `worst`); else only the output shapes. The failure in words, or "".
std::string compare_run(ModelAccess& model, const ModelTensors& tensors, const graph::Forward& forward,
                        const Outputs* expected, const std::vector<graph::Shape>& shapes, double tolerance,
                        double* worst) {
  Outputs got;
  try {
    got = exact_outputs(model, tensors, forward);
  } catch (const std::exception& e) {
    std::string what = e.what();
    return "the forward failed after the cut (" + what.substr(0, what.find('\n')) + ")";
  }
  if (!expected) {
    if (shapes_of_outputs(got) == shapes) return "";
    return "the output shapes " + shapes_of(got) + " differ from the dense model's";
  }
  const auto d = output_difference(*expected, got);
  *worst = std::max(*worst, d.worst);
  if (!d.problem.empty()) return d.problem;
  if (d.worst <= tolerance) return "";
  std::ostringstream s;
  s.precision(2);
  s << "the cut model runs but computes something else: its outputs differ from the dense model's with the "
       "same channels silenced by " << d.worst << " of their scale (tolerance " << tolerance << ")";
  return s.str();
}

}  // namespace

CheckedCut apply_checked(ModelAccess& model, const ModelTensors& tensors, const graph::Forward& forward,
                         const PruningPlan& plan, const PruningPlan* exact_part, const OptimizerView* optimizer,
                         double tolerance) {
  CheckedCut out;
  const bool whole = exact_part == nullptr;
  const Outputs masked = exact_outputs(model, tensors, forward, whole ? &plan : exact_part);
  const auto shapes = shapes_of_outputs(masked);
  if (!whole && !exact_part->empty()) {
    auto part = apply_cuts(model, tensors, *exact_part, optimizer);
    out.failure = compare_run(model, tensors, forward, &masked, shapes, tolerance, &out.worst);
    part.run();
  }
  out.rollback = apply_cuts(model, tensors, plan, optimizer);
  const auto failure = compare_run(model, tensors, forward, whole ? &masked : nullptr, shapes, tolerance, &out.worst);
  if (out.failure.empty()) out.failure = failure;
  return out;
}

CheckedCut apply_shape_checked(ModelAccess& model, const ModelTensors& tensors, const graph::Forward& forward,
                               const PruningPlan& plan, const std::vector<graph::Shape>& shapes,
                               const OptimizerView* optimizer) {
  CheckedCut out;
  out.rollback = apply_cuts(model, tensors, plan, optimizer);
  out.failure = compare_run(model, tensors, forward, nullptr, shapes, 0, &out.worst);
  return out;
}

std::string ExactReport::to_string() const {
  std::ostringstream s;
  s.precision(3);
  s << (exact ? "exact" : "NOT exact") << ": worst difference " << worst << " of the output scale (tolerance "
    << tolerance << ")";
  if (!group.empty()) s << "; first group that breaks it: " << group;
  if (!problem.empty()) s << "; " << problem;
  if (!normalised.empty()) {
    s << "; " << normalised.size() << " normalised group(s) checked for shapes only:";
    for (const auto& n : normalised) s << " " << n;
  }
  return s.str();
}

ExactReport check_exact(ModelAccess& before, const graph::Forward& before_forward, ModelAccess& after,
                        const graph::Forward& after_forward, const PruningPlan& plan, double tolerance) {
  const ModelTensors tensors(before);
  validate_plan(tensors, plan);
  graph::Trace traced = [&] {
    const auto eval = before.eval_scope();
    return graph::Trace::capture(before_forward, tensors.parameters);
  }();
  const graph::DependencyGraph g(traced, tensors.companions);
  const auto cuts = split_by_group(g, plan);
  std::vector<const PruningPlan*> exact_plans;
  ExactReport r;
  r.tolerance = tolerance;
  for (const auto& c : cuts) {
    if (g.groups()[c.group].normalised) {
      r.normalised.push_back(g.groups()[c.group].name());
    } else {
      exact_plans.push_back(&c.plan);
    }
  }
  const ModelTensors after_tensors(after);
  if (r.normalised.empty()) {
    const auto d = output_difference(exact_outputs(before, tensors, before_forward, &plan),
                                     exact_outputs(after, after_tensors, after_forward));
    r.worst = d.worst;
    r.problem = d.problem;
  } else {
    auto shapes = output_difference(exact_outputs(before, tensors, before_forward),
                                    exact_outputs(after, after_tensors, after_forward));
    r.problem = shapes.problem;  // only the shapes count
    const auto rest = merge_plans(exact_plans);
    if (!rest.empty()) {
      auto checked = apply_checked(before, tensors, before_forward, rest, nullptr, nullptr, tolerance);
      checked.rollback.run();
      r.worst = checked.worst;
      if (r.problem.empty()) r.problem = checked.failure;
    }
  }
  r.exact = r.problem.empty() && r.worst <= tolerance;
  if (r.exact) return r;
  if (r.problem.empty()) r.problem = "the outputs differ from the masked dense model's beyond the tolerance";
  for (const auto& c : cuts) {
    if (g.groups()[c.group].normalised) continue;
    auto checked = apply_checked(before, tensors, before_forward, c.plan, nullptr, nullptr, tolerance);
    checked.rollback.run();
    if (!checked.failure.empty()) {
      r.group = g.groups()[c.group].name();
      break;
    }
  }
  return r;
}

}  // namespace libprune::layers
