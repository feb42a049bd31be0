// LibTorch 1.13 reads of autograd internals. 2.x renamed several saved fields to sym-int ones
// and made InputMetadata's shape public; a port replaces this file only.
#include "autograd_adapter.h"

#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/generated/Functions.h>
#include <torch/version.h>

namespace libprune::graph::detail {
namespace {

using torch::autograd::InputMetadata;
using namespace torch::autograd::generated;

#if TORCH_VERSION_MAJOR < 2
// InputMetadata::shape_as_dim_vector() is private in 1.13. An explicit template instantiation
// may name a private member, which gives us a pointer to it without any undefined behaviour.
using ShapeMember = c10::SymIntArrayRef (InputMetadata::*)() const;
ShapeMember shape_member();
template <ShapeMember M>
struct ShapeAccess {
  friend ShapeMember shape_member() { return M; }
};
template struct ShapeAccess<&InputMetadata::shape_as_dim_vector>;

c10::SymIntArrayRef metadata_shape(const InputMetadata& m) { return (m.*shape_member())(); }
#else
c10::SymIntArrayRef metadata_shape(const InputMetadata& m) { return m.shape_as_dim_vector(); }
#endif

Shape to_shape(c10::SymIntArrayRef sizes) {
  Shape out;
  out.reserve(sizes.size());
  for (const auto& s : sizes) out.push_back(s.expect_int());
  return out;
}

Shape to_shape(c10::IntArrayRef sizes) { return Shape(sizes.begin(), sizes.end()); }

Shape saved_shape(const torch::autograd::SavedVariable& v) {
  try {
    auto t = v.unpack();
    return t.defined() ? to_shape(t.sizes()) : Shape{};
  } catch (const c10::Error&) {
    return {};
  }
}

// A 0-dim operand broadcasts like a [1]; an empty Shape means "unknown" to the graph.
Shape saved_broadcast_shape(const torch::autograd::SavedVariable& v) {
  try {
    auto t = v.unpack();
    if (!t.defined()) return {};
    return t.dim() == 0 ? Shape{1} : to_shape(t.sizes());
  } catch (const c10::Error&) {
    return {};
  }
}

void fill(TracedNode& out, size_t input, const Shape& shape) {
  if (input < out.input_shapes.size() && out.input_shapes[input].empty()) out.input_shapes[input] = shape;
}


}  // namespace

Shape forward_output_shape(const torch::autograd::Node& node, uint32_t index) {
  const auto& meta = node.input_metadata(index);
  // Nested tensors keep a tensor of shapes instead; they have no single shape.
  try {
    return to_shape(metadata_shape(meta));
  } catch (const std::exception&) {
    return {};
  }
}

torch::Tensor accumulated_variable(const torch::autograd::Node& node) {
  if (const auto* acc = dynamic_cast<const torch::autograd::AccumulateGrad*>(&node)) return acc->variable;
  return {};
}

void read_saved_fields(const torch::autograd::Node& node, TracedNode& out) {
  if (const auto* n = dynamic_cast<const ConvolutionBackward0*>(&node)) {
    out.attrs["stride"] = n->stride;
    out.attrs["padding"] = n->padding;
    out.attrs["dilation"] = n->dilation;
    out.attrs["output_padding"] = n->output_padding;
    out.attrs["groups"] = {n->groups};
    out.attrs["transposed"] = {n->transposed ? 1 : 0};
    fill(out, 0, saved_shape(n->input_));
    fill(out, 1, saved_shape(n->weight_));
  } else if (const auto* n = dynamic_cast<const AddmmBackward0*>(&node)) {
    fill(out, 1, to_shape(c10::SymIntArrayRef(n->mat1_sym_sizes)));
    fill(out, 2, to_shape(c10::SymIntArrayRef(n->mat2_sym_sizes)));
  } else if (const auto* n = dynamic_cast<const MmBackward0*>(&node)) {
    fill(out, 0, to_shape(c10::SymIntArrayRef(n->self_sym_sizes)));
    fill(out, 1, to_shape(c10::SymIntArrayRef(n->mat2_sym_sizes)));
  } else if (const auto* n = dynamic_cast<const BmmBackward0*>(&node)) {
    fill(out, 0, saved_shape(n->self_));
    fill(out, 1, saved_shape(n->mat2_));
  } else if (const auto* n = dynamic_cast<const CatBackward0*>(&node)) {
    out.attrs["dim"] = {n->dim};
    std::vector<int64_t> sizes;
    for (const auto& s : n->tensors_args_sizes) sizes.push_back(s.empty() ? 0 : s.at(static_cast<size_t>(n->dim < 0 ? n->dim + static_cast<int64_t>(s.size()) : n->dim)));
    out.attrs["sizes"] = sizes;
    for (size_t i = 0; i < n->tensors_args_sizes.size(); ++i) fill(out, i, n->tensors_args_sizes[i]);
  } else if (const auto* n = dynamic_cast<const SplitBackward0*>(&node)) {
    out.attrs["dim"] = {n->dim};
    out.attrs["split_size"] = {n->split_size};
    fill(out, 0, n->self_sizes);
  } else if (const auto* n = dynamic_cast<const SplitWithSizesBackward0*>(&node)) {
    out.attrs["dim"] = {n->dim};
    out.attrs["split_sizes"] = n->split_sizes;
    fill(out, 0, n->self_sizes);
  } else if (const auto* n = dynamic_cast<const SliceBackward0*>(&node)) {
    out.attrs["dim"] = {n->dim};
    if (n->start) out.attrs["start"] = {n->start->expect_int()};
    if (n->end) out.attrs["end"] = {n->end->expect_int()};
    out.attrs["step"] = {n->step.expect_int()};
    fill(out, 0, to_shape(c10::SymIntArrayRef(n->self_sym_sizes)));
  } else if (const auto* n = dynamic_cast<const SelectBackward0*>(&node)) {
    out.attrs["dim"] = {n->dim};
    out.attrs["index"] = {n->index};
    fill(out, 0, n->self_sizes);
  } else if (const auto* n = dynamic_cast<const TransposeBackward0*>(&node)) {
    out.attrs["dims"] = {n->dim0, n->dim1};
  } else if (const auto* n = dynamic_cast<const PermuteBackward0*>(&node)) {
    out.attrs["dims"] = n->dims;
  } else if (const auto* n = dynamic_cast<const UnbindBackward0*>(&node)) {
    out.attrs["dim"] = {n->dim};
  } else if (const auto* n = dynamic_cast<const ViewBackward0*>(&node)) {
    fill(out, 0, to_shape(c10::SymIntArrayRef(n->self_sym_sizes)));
  } else if (const auto* n = dynamic_cast<const MaxPool2DWithIndicesBackward0*>(&node)) {
    out.attrs["kernel_size"] = n->kernel_size;
    out.attrs["stride"] = n->stride;
    fill(out, 0, saved_shape(n->self_));
  } else if (const auto* n = dynamic_cast<const NativeGroupNormBackward0*>(&node)) {
    out.attrs["groups"] = {n->group};
    fill(out, 0, saved_shape(n->input_));
  } else if (const auto* n = dynamic_cast<const NativeBatchNormBackward0*>(&node)) {
    fill(out, 0, saved_shape(n->input_));
  } else if (const auto* n = dynamic_cast<const NativeLayerNormBackward0*>(&node)) {
    fill(out, 0, saved_shape(n->input_));
  } else if (const auto* n = dynamic_cast<const MeanBackward1*>(&node)) {
    if (n->dim.list) out.attrs["dim"] = *n->dim.list;
    out.attrs["keepdim"] = {n->keepdim ? 1 : 0};
    fill(out, 0, to_shape(c10::SymIntArrayRef(n->self_sym_sizes)));
  } else if (const auto* n = dynamic_cast<const MulBackward0*>(&node)) {
    // Operands that need no grad have no edge; their saved value still says how they broadcast.
    fill(out, 0, saved_broadcast_shape(n->self_));
    fill(out, 1, saved_broadcast_shape(n->other_));
  } else if (const auto* n = dynamic_cast<const DivBackward0*>(&node)) {
    fill(out, 0, saved_broadcast_shape(n->self_));
    fill(out, 1, saved_broadcast_shape(n->other_));
  } else if (const auto* n = dynamic_cast<const EmbeddingBackward0*>(&node)) {
    fill(out, 0, saved_shape(n->weight_));
  }
}

}  // namespace libprune::graph::detail
