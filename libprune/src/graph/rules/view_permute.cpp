// Shape ops that move channels without mixing them: permute and transpose, slice and select,
// expand, copies, and row-major reshapes (view, flatten, squeeze).
#include "rules.h"

#include <algorithm>
#include <numeric>

namespace libprune::graph::rules {
namespace {

int64_t prod(const Shape& s, size_t b, size_t e) {
  int64_t p = 1;
  for (size_t i = b; i < e && i < s.size(); ++i) p *= s[i];
  return p;
}

// The forward permutation of dims that a permute (all dims) or a transpose (two) applies.
std::vector<int64_t> permutation(const TracedNode& n, size_t rank, bool transpose) {
  std::vector<int64_t> perm(rank);
  std::iota(perm.begin(), perm.end(), 0);
  if (!transpose) {
    perm = n.attrs.count("dims") ? n.attrs.at("dims") : perm;
  } else {
    auto dims = n.attrs.count("dims") ? n.attrs.at("dims") : std::vector<int64_t>{0, 1};
    for (auto& d : dims) d = wrap_dim(d, rank);
    if (dims.size() == 2) std::swap(perm[static_cast<size_t>(dims[0])], perm[static_cast<size_t>(dims[1])]);
  }
  for (auto& p : perm) p = wrap_dim(p, rank);
  return perm;
}

void permute(RuleContext& c, int i, bool transpose) {
  const Space& x = c.input(i, 0);
  if (!x.tracked) return;
  const Shape in = c.in_shape(i, 0), out = c.out_shape(i);
  const auto perm = permutation(c.node(i), out.size(), transpose);
  // Where each channel dim lands. Channel dims may end up apart (heads: [B, T, H, D] ->
  // [B, H, T, D]); if they change order among themselves, the flattened channels are permuted.
  std::vector<int64_t> pos(x.dims.size(), -1);
  for (size_t j = 0; j < perm.size(); ++j) {
    for (size_t k = 0; k < x.dims.size(); ++k) {
      if (perm[j] == x.dims[k]) pos[k] = static_cast<int64_t>(j);
    }
  }
  if (std::count(pos.begin(), pos.end(), -1) > 0) return c.pin(x, c.why(i, "a permute of unknown rank"));
  Space s = x;
  s.dims = pos;
  std::sort(s.dims.begin(), s.dims.end());
  if (!std::is_sorted(pos.begin(), pos.end())) {
    if (in.size() <= static_cast<size_t>(x.dims.back())) return c.pin(x, c.why(i, "input shape unknown"));
    std::vector<int64_t> sizes, order;
    for (auto d : x.dims) sizes.push_back(in[static_cast<size_t>(d)]);
    for (auto d : s.dims) order.push_back(std::find(pos.begin(), pos.end(), d) - pos.begin());
    const auto idx = torch::arange(static_cast<int64_t>(x.elems.size()), torch::kLong).reshape(sizes).permute(order).flatten().contiguous();
    const int64_t* p = idx.data_ptr<int64_t>();
    for (size_t k = 0; k < s.elems.size(); ++k) s.elems[k] = x.elems[static_cast<size_t>(p[k])];
    // The model re-splits the channels after a cut (view(n, groups, c / groups)); that only lands
    // each kept channel where the next layer expects it if every outer slice loses the same inner
    // indices. So channels with the same innermost index are one unit.
    const int64_t inner = sizes.back();
    for (size_t k = 0; k < x.elems.size(); ++k) c.unite(x.elems[k], x.elems[k % static_cast<size_t>(inner)]);
  }
  c.set(i, s);
}

// slice and select: along a dim without channels nothing moves; along a channel dim the output
// keeps the picked channels (the ones sliced away stay in the producer, read by nobody here).
void pick(RuleContext& c, int i, bool select) {
  const auto& n = c.node(i);
  const Space& x = c.input(i, 0);
  if (!x.tracked) return;
  const Shape in = c.in_shape(i, 0);
  const int64_t d = wrapped_dim(n, in);
  if (!x.has(d)) {
    Space s = x;
    if (select) {
      for (auto& dim : s.dims) dim -= dim > d ? 1 : 0;
    }
    return c.set(i, s);
  }
  if (in.size() <= static_cast<size_t>(x.dims.back())) return c.pin(x, c.why(i, "input shape unknown"));
  const int64_t size = in[static_cast<size_t>(d)];
  if (select) {
    // Picking one entry of one channel dim among several (q, k, v = qkv[0], qkv[1], qkv[2]).
    if (x.single()) return c.pin(x, c.why(i, "select picks single channels"));
    int64_t index = n.attr("index");
    if (index < 0) index += size;
    return c.restrict(i, x, RuleContext::element_map(x, in).select(d, index));
  }
  const int64_t start_attr = n.attr("start", 0);
  const int64_t start = std::clamp<int64_t>(start_attr < 0 ? start_attr + size : start_attr, 0, size);
  int64_t end = n.has_attr("end") ? n.attr("end") : size;
  end = std::clamp<int64_t>(end < 0 ? end + size : end, 0, size);
  const int64_t step = std::max<int64_t>(1, n.attr("step", 1));
  if (!x.single()) return c.restrict(i, x, RuleContext::element_map(x, in).slice(d, start, end, step));
  Space s = x;
  s.elems.clear();
  for (int64_t j = start; j < end; j += step) s.elems.push_back(x.elems[static_cast<size_t>(j)]);
  c.set(i, s);
}

void expand(RuleContext& c, int i) {
  Space s = c.input(i, 0);
  if (!s.tracked) return;
  s.shift(static_cast<int64_t>(c.out_shape(i).size()) - static_cast<int64_t>(c.in_shape(i, 0).size()));
  c.set(i, s);
}

// A row-major reshape. Fast path: the channel range either maps onto output dims whole, or is
// merged with the dims after it (a flatten), so each channel owns a contiguous block of features.
// Otherwise (heads split off and merged into the batch, and back) the element map is reshaped and
// read again. Returns false when the fast path does not apply.
bool reshape_fast(RuleContext& c, int i, const Space& x, const Shape& in, const Shape& out) {
  const auto begin = static_cast<size_t>(x.dims.front()), end = static_cast<size_t>(x.dims.back() + 1);
  const int64_t pre = prod(in, 0, begin), len = prod(in, begin, end), post = prod(in, end, in.size());
  size_t b = 0;
  while (b <= out.size() && prod(out, 0, b) != pre) ++b;
  while (b < out.size() && out[b] == 1 && pre == prod(out, 0, b + 1) && len != 1) ++b;
  for (size_t e = b + 1; b <= out.size() && e <= out.size(); ++e) {
    const int64_t p = prod(out, b, e);
    Space s;
    s.tracked = true;
    for (size_t d = b; d < e; ++d) s.dims.push_back(static_cast<int64_t>(d));
    if (p == len) {
      s.elems = x.elems;
      c.set(i, s);
      return true;
    }
    if (p > len && p % len == 0 && post % (p / len) == 0) {
      const int64_t k = p / len;
      s.elems.reserve(static_cast<size_t>(p));
      for (int64_t f = 0; f < p; ++f) s.elems.push_back(x.elems[static_cast<size_t>(f / k)]);
      c.set(i, s);
      return true;
    }
    if (p > len) break;
  }
  return false;
}

// `copy`: the op can be a copy (same shape in and out); `reshaping`: it can be a row-major reshape.
// An op that is neither (a stack, a roll, a pad) pins its channels.
void reshape(RuleContext& c, int i, bool copy, bool reshaping) {
  const Space& x = c.input(i, 0);
  if (!x.tracked) return;
  const Shape in = c.in_shape(i, 0), out = c.out_shape(i);
  if (in == out && copy) return c.set(i, x);
  if (!reshaping) return c.pin(x, c.why(i, "shape op not understood"));
  if (in.empty()) return c.pin(x, c.why(i, "input shape unknown"));
  if (x.contiguous() && reshape_fast(c, i, x, in, out)) return;
  if (prod(in, 0, in.size()) != prod(out, 0, out.size())) return c.pin(x, c.why(i, "input shape unknown"));
  Space s = RuleContext::from_map(RuleContext::element_map(x, in).expand(in).reshape(out));
  if (!s.tracked) {
    return c.pin(x, c.why(i, "a reshape mixes channels with other dims in a way the tracer does not follow"));
  }
  c.set(i, s);
}

}  // namespace

void add_view_permute(const Add& add) {
  add("Permute", OpKind::Shape, [](RuleContext& c, int i) { permute(c, i, false); });
  add_all(add, {"Transpose", "T"}, OpKind::Shape, [](RuleContext& c, int i) { permute(c, i, true); });
  add("Slice", OpKind::Shape, [](RuleContext& c, int i) { pick(c, i, false); });
  add("Select", OpKind::Shape, [](RuleContext& c, int i) { pick(c, i, true); });
  add("Expand", OpKind::Shape, expand);
  auto reshape_of = [](bool copy, bool reshaping) -> OpRule {
    return [copy, reshaping](RuleContext& c, int i) { reshape(c, i, copy, reshaping); };
  };
  add_all(add, {"View", "ReshapeAlias", "UnsafeView", "AsStrided"}, OpKind::Shape, reshape_of(true, true));
  add_all(add, {"Unsqueeze", "Squeeze", "Flatten"}, OpKind::Shape, reshape_of(false, true));
  add_all(add, {"Clone", "Contiguous", "ToCopy"}, OpKind::Shape, reshape_of(true, false));
  // Shape ops the tracer does not follow: their channels are pinned.
  add_all(add, {"Stack", "PixelShuffle", "Roll", "ConstantPadNd"}, OpKind::Shape, reshape_of(false, false));
}

}  // namespace libprune::graph::rules
