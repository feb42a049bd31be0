// Normalisations (batch, layer, group norm) and pooling (spatial pools, means over dims).
#include "rules.h"

#include <algorithm>

namespace libprune::graph::rules {
namespace {

void norm(RuleContext& c, int i) {
  const auto& n = c.node(i);
  const Space& x = c.input(i, 0);
  const Shape xs = c.in_shape(i, 0).empty() ? c.out_shape(i) : c.in_shape(i, 0);
  const std::string w = n.inputs.size() > 1 ? c.parameter(i, 1) : std::string{};
  const std::string b = n.inputs.size() > 2 ? c.parameter(i, 2) : std::string{};
  int64_t dim = -1;
  if (n.op == "NativeBatchNorm" || n.op == "CudnnBatchNorm" || n.op == "MiopenBatchNorm") dim = 1;
  if (n.op == "NativeLayerNorm") dim = static_cast<int64_t>(xs.size()) - 1;
  if (n.op == "NativeGroupNorm") dim = 1;
  if (dim < 0 || !x.at(dim)) return c.pin(x, c.why(i, "normalised dimension is not the traced channel dimension"));
  if (n.op == "NativeGroupNorm") {
    // Every group must keep the same width: channels with the same index inside their group are
    // one unit, like a grouped conv's.
    const int64_t groups = n.attr("groups", 1);
    const auto channels = static_cast<int64_t>(x.elems.size());
    if (groups < 1 || channels % groups != 0) return c.pin(x, c.why(i, "group norm with uneven groups"));
    const int64_t width = channels / groups;
    for (int64_t k = width; k < channels; ++k) {
      c.unite(x.elems[static_cast<size_t>(k)], x.elems[static_cast<size_t>(k % width)]);
    }
  }
  // Running statistics follow the weight as companions (layers::ModelAccess::companions).
  c.member(w, 0, x.elems);
  c.member(b, 0, x.elems);
  if (n.op == "NativeLayerNorm") c.mark_layer_normed(x.elems);
  c.set(i, x);
}

void pool(RuleContext& c, int i) {
  const auto& n = c.node(i);
  const Space& x = c.input(i, 0);
  if (!x.tracked) return;
  if (n.op == "Mean") {
    const Shape in = c.in_shape(i, 0);
    std::vector<int64_t> dims = n.attrs.count("dim") ? n.attrs.at("dim") : std::vector<int64_t>{};
    if (dims.empty() || in.empty()) return c.pin(x, c.why(i, "mean over every dimension mixes channels"));
    for (auto& d : dims) {
      if (d < 0) d += static_cast<int64_t>(in.size());
      if (x.has(d)) return c.pin(x, c.why(i, "mean over the channel dimension"));
    }
    Space s = x;
    if (!n.attr("keepdim")) {
      for (auto& d : s.dims) d -= std::count_if(dims.begin(), dims.end(), [d](int64_t m) { return m < d; });
    }
    return c.set(i, s);
  }
  // Spatial pooling keeps [N, C, ...] channels in place.
  if (x.at(1)) return c.set(i, x);
  c.pin(x, c.why(i, "pooling over the channel dimension"));
}

}  // namespace

void add_norm_pool(const Add& add) {
  add_all(add, {"NativeBatchNorm", "CudnnBatchNorm", "MiopenBatchNorm", "NativeLayerNorm", "NativeGroupNorm"},
          OpKind::Norm, norm);
  add_all(add,
          {"MaxPool2DWithIndices", "MaxPool3DWithIndices", "MaxPool2D", "AvgPool2D", "AvgPool3D", "AdaptiveAvgPool2D",
           "AdaptiveAvgPool3D", "AdaptiveMaxPool2D", "Mean", "MkldnnAdaptiveAvgPool2D"},
          OpKind::Pool, pool);
}

}  // namespace libprune::graph::rules
