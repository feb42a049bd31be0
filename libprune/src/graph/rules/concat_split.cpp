// Concatenation and splitting: along the channel dim, inputs sit side by side (offsets come for
// free) and pieces take sub-ranges; along another dim, the pieces carry the same channels.
#include "rules.h"

namespace libprune::graph::rules {
namespace {

// Concat along the channel dim `d` of `first`: the inputs' elements side by side; an input without
// traced channels gets pinned filler elements.
void cat_channels(RuleContext& c, int i, const Space& first, int64_t d) {
  const auto& n = c.node(i);
  const auto sizes = n.attrs.count("sizes") ? n.attrs.at("sizes") : std::vector<int64_t>{};
  Space s = first;
  s.elems.clear();
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const Space& x = c.input(i, k);
    if (x.at(d)) {
      s.elems.insert(s.elems.end(), x.elems.begin(), x.elems.end());
      continue;
    }
    const Shape in = c.in_shape(i, k);
    const int64_t size = k < sizes.size() ? sizes[k] : (in.empty() ? -1 : in[static_cast<size_t>(d)]);
    if (size < 0) return c.pin_inputs(i, c.why(i, "concat of an input whose size is unknown"));
    auto filler = c.fresh(size);
    c.pin(filler, c.why(i, "concatenated with a tensor that has no traced channels"));
    s.elems.insert(s.elems.end(), filler.begin(), filler.end());
  }
  c.set(i, s);
}

void cat(RuleContext& c, int i) {
  const auto& n = c.node(i);
  const int64_t d = wrapped_dim(n, c.out_shape(i));
  Space first;
  for (size_t k = 0; k < n.inputs.size() && !first.tracked; ++k) first = c.input(i, k);
  if (!first.tracked) return;
  if (first.at(d)) return cat_channels(c, i, first, d);
  if (first.has(d)) return c.pin_inputs(i, c.why(i, "concat inside a multi-dim channel range"));
  // Concat along another dim (tokens, batch): the inputs' channels are the same channels.
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const Space& x = c.input(i, k);
    if (!x.tracked) {
      const std::string p = c.parameter(i, k);
      if (!p.empty() && first.single()) {
        c.member(p, first.dims[0], first.elems);
        continue;
      }
      return c.pin(first, c.why(i, "concatenated with a tensor that has no traced channels"));
    }
    if (x.dims != first.dims) return c.pin_inputs(i, c.why(i, "concat of different layouts"));
    c.unite(first.elems, x.elems);
  }
  c.set(i, first);
}

enum class SplitKind { Equal, Sizes, Unbind };  // chunk/split(size), split(sizes), unbind

void split(RuleContext& c, int i, SplitKind kind) {
  const auto& n = c.node(i);
  const Space& x = c.input(i, 0);
  if (!x.tracked) return;
  const Shape in = c.in_shape(i, 0);
  const int64_t d = wrapped_dim(n, in);
  const size_t outputs = n.output_shapes.size();
  if (!x.has(d)) {
    Space s = x;
    if (kind == SplitKind::Unbind) {
      for (auto& dim : s.dims) dim -= dim > d ? 1 : 0;
    }
    for (size_t o = 0; o < outputs; ++o) c.set(i, s, o);
    return;
  }
  if (kind == SplitKind::Unbind && !x.single() && in.size() > static_cast<size_t>(x.dims.back())) {
    // q, k, v = qkv.unbind(0): each output keeps the channels of its entry.
    const auto m = RuleContext::element_map(x, in);
    for (size_t o = 0; o < outputs; ++o) c.restrict(i, x, m.select(d, static_cast<int64_t>(o)), o);
    return;
  }
  if (kind == SplitKind::Unbind || !x.single()) return c.pin(x, c.why(i, "split across channel dimensions"));
  // chunk(k) / split(size): the model derives the cut points from the current size, so after a cut
  // every piece must still be equally large. Pairing channel j of every piece keeps that.
  const int64_t piece = n.attr("split_size");
  if (kind == SplitKind::Equal && outputs > 1 && piece > 0 && piece * static_cast<int64_t>(outputs) == static_cast<int64_t>(x.elems.size())) {
    for (size_t o = 1; o < outputs; ++o) {
      for (int64_t j = 0; j < piece; ++j) {
        c.unite(x.elems[static_cast<size_t>(j)], x.elems[o * static_cast<size_t>(piece) + static_cast<size_t>(j)]);
      }
    }
  }
  int64_t offset = 0;
  for (size_t o = 0; o < outputs; ++o) {
    const Shape os = c.out_shape(i, o);
    const int64_t size = os.size() > static_cast<size_t>(d) ? os[static_cast<size_t>(d)] : 0;
    Space s = x;
    const int64_t stop = std::min<int64_t>(offset + size, static_cast<int64_t>(x.elems.size()));
    s.elems.assign(x.elems.begin() + offset, x.elems.begin() + stop);
    offset += size;
    c.set(i, s, o);
  }
}

}  // namespace

void add_concat_split(const Add& add) {
  add("Cat", OpKind::Shape, cat);
  auto split_of = [](SplitKind kind) -> OpRule { return [kind](RuleContext& c, int i) { split(c, i, kind); }; };
  add("Split", OpKind::Shape, split_of(SplitKind::Equal));
  add("SplitWithSizes", OpKind::Shape, split_of(SplitKind::Sizes));
  add("Unbind", OpKind::Shape, split_of(SplitKind::Unbind));
}

}  // namespace libprune::graph::rules
