// Normalisations (batch, layer, group norm) and pooling (spatial pools, means over dims).
#include "rules.h"

#include <algorithm>

namespace libprune::graph::rules {
namespace {

enum class NormKind { Batch, Layer, Group };

// Each kind is a rule of its own (bound below), so an op aliased to one behaves like it whatever its name.
void norm(RuleContext& c, int i, NormKind kind) {
  const auto& n = c.node(i);
  const Space& x = c.input(i, 0);
  const Shape xs = c.in_shape(i, 0).empty() ? c.out_shape(i) : c.in_shape(i, 0);
  const std::string w = n.inputs.size() > 1 ? c.parameter(i, 1) : std::string{};
  const std::string b = n.inputs.size() > 2 ? c.parameter(i, 2) : std::string{};
  const int64_t dim = kind == NormKind::Layer ? static_cast<int64_t>(xs.size()) - 1 : 1;
  if (dim < 0 || !x.at(dim)) return c.pin(x, c.why(i, "normalised dimension is not the traced channel dimension"));
  if (kind == NormKind::Group) {
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
  if (kind != NormKind::Batch) c.mark_normalised(x.elems, kind == NormKind::Layer);
  c.set(i, x);
}

// A mean over some dims: the channels stay unless it averages over them.
void mean(RuleContext& c, int i) {
  const auto& n = c.node(i);
  const Space& x = c.input(i, 0);
  if (!x.tracked) return;
  const Shape in = c.in_shape(i, 0);
  std::vector<int64_t> dims = n.attrs.count("dim") ? n.attrs.at("dim") : std::vector<int64_t>{};
  if (dims.empty() || in.empty()) return c.pin(x, c.why(i, "mean over every dimension mixes channels"));
  for (auto& d : dims) {
    d = wrap_dim(d, in.size());
    if (x.has(d)) return c.pin(x, c.why(i, "mean over the channel dimension"));
  }
  Space s = x;
  if (!n.attr("keepdim")) {
    for (auto& d : s.dims) d -= std::count_if(dims.begin(), dims.end(), [d](int64_t m) { return m < d; });
  }
  c.set(i, s);
}

// Spatial pooling keeps [N, C, ...] channels in place.
void pool(RuleContext& c, int i) {
  const Space& x = c.input(i, 0);
  if (!x.tracked) return;
  if (x.at(1)) return c.set(i, x);
  c.pin(x, c.why(i, "pooling over the channel dimension"));
}

constexpr const char* kBatchNormOps[] = {"NativeBatchNorm", "CudnnBatchNorm", "MiopenBatchNorm"};

}  // namespace

void add_norm_pool(const Add& add) {
  auto norm_of = [](NormKind kind) -> OpRule { return [kind](RuleContext& c, int i) { norm(c, i, kind); }; };
  for (const char* op : kBatchNormOps) add(op, OpKind::Norm, norm_of(NormKind::Batch));
  add("NativeLayerNorm", OpKind::Norm, norm_of(NormKind::Layer));
  add("NativeGroupNorm", OpKind::Norm, norm_of(NormKind::Group));
  add_all(add,
          {"MaxPool2DWithIndices", "MaxPool3DWithIndices", "MaxPool2D", "AvgPool2D", "AvgPool3D", "AdaptiveAvgPool2D",
           "AdaptiveAvgPool3D", "AdaptiveMaxPool2D", "MkldnnAdaptiveAvgPool2D"},
          OpKind::Pool, pool);
  add("Mean", OpKind::Pool, mean);
}

}  // namespace libprune::graph::rules

namespace libprune::graph {

bool is_batch_norm_op(const std::string& op) {
  const auto& ops = rules::kBatchNormOps;
  return std::find(std::begin(ops), std::end(ops), detail::op_origin(op)) != std::end(ops);
}

}  // namespace libprune::graph
