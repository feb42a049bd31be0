#include "builder.h"

#include <algorithm>

namespace libprune::graph::detail {
namespace {

int64_t prod_of(const Shape& s, const std::vector<int64_t>& dims) {
  int64_t p = 1;
  for (auto d : dims) p *= d >= 0 && d < static_cast<int64_t>(s.size()) ? s[static_cast<size_t>(d)] : 0;
  return p;
}

}  // namespace

Builder::Builder(const Trace& trace, const std::vector<Companion>& companions) : trace_(trace) {
  for (const auto& c : companions) followers_[Member{c.follows, c.follows_dim}].push_back(c);
}

std::vector<Group> Builder::run() {
  const auto& nodes = trace_.nodes();
  spaces_.resize(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    spaces_[i].assign(std::max<size_t>(1, nodes[i].output_shapes.size()), Space{});
    const OpRule rule = detail::find_op_rule(nodes[i].op);
    if (rule) {
      rule(*this, static_cast<int>(i));
    } else {
      pin_inputs(static_cast<int>(i), why(static_cast<int>(i), "op not understood by the tracer; channels through it are left alone"));
    }
  }
  for (size_t o = 0; o < trace_.outputs().size(); ++o) {
    const int n = trace_.outputs()[o];
    if (n >= 0) RuleContext::pin(spaces_[static_cast<size_t>(n)][0], "model output " + std::to_string(o) + " (its shape must not change)");
  }
  return make_groups(units_);
}

const Space& Builder::input(int i, size_t k) const {
  static const Space untracked;
  const auto& n = node(i);
  if (k >= n.inputs.size() || n.inputs[k] < 0) return untracked;
  const auto& outs = spaces_[static_cast<size_t>(n.inputs[k])];
  const auto slot = static_cast<size_t>(n.input_slots[k]);
  return slot < outs.size() ? outs[slot] : untracked;
}

void Builder::pin(const std::vector<int64_t>& elements, const std::string& reason) {
  for (auto e : elements) units_.reasons.emplace(e, reason);
}

void Builder::member(const std::string& tensor, int64_t dim, const std::vector<int64_t>& elements) {
  if (tensor.empty()) return;
  const Member key{tensor, dim};
  auto [it, inserted] = units_.members.emplace(key, elements);
  if (!inserted) {
    unite(it->second, elements);  // a layer used twice: both uses are one channel
    return;
  }
  auto followers = followers_.find(key);
  if (followers == followers_.end()) return;
  for (const auto& c : followers->second) {
    if (c.size == static_cast<int64_t>(elements.size())) member(c.tensor, c.dim, elements);
  }
}

void Builder::set(int i, Space s, size_t slot) {
  auto& outs = spaces_[static_cast<size_t>(i)];
  if (slot >= outs.size()) outs.resize(slot + 1);
  // Never let an inconsistent space through: its size must match the output shape.
  const Shape shape = out_shape(i, slot);
  if (s.tracked && (shape.empty() || s.dims.empty() || !std::is_sorted(s.dims.begin(), s.dims.end()) ||
                    s.dims.front() < 0 || prod_of(shape, s.dims) != static_cast<int64_t>(s.elems.size()))) {
    RuleContext::pin(s, why(i, "output shape does not match the traced channels"));
    s = Space{};
  }
  outs[slot] = std::move(s);
}

void Builder::mark_normalised(const std::vector<int64_t>& elements, bool layer_norm) {
  units_.normalised.insert(units_.normalised.end(), elements.begin(), elements.end());
  if (layer_norm) units_.layer_normed.insert(units_.layer_normed.end(), elements.begin(), elements.end());
}

}  // namespace libprune::graph::detail
