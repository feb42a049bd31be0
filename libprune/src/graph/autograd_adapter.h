#pragma once
// The one place that reads LibTorch-version-specific autograd internals: the private shape of
// InputMetadata and the saved fields of generated backward nodes. Supporting a new LibTorch
// means changing the one .cpp behind this header.
#include "libprune/graph/trace.h"

#include <torch/csrc/autograd/function.h>

namespace libprune::graph::detail {

// Forward shape of output `index` of the op that `node` differentiates.
Shape forward_output_shape(const torch::autograd::Node& node, uint32_t index);

// Fills `out.attrs`, and `out.input_shapes` entries that the next edges could not provide,
// from the saved fields of the ops the tracer has rules for.
void read_saved_fields(const torch::autograd::Node& node, TracedNode& out);

// The parameter tensor behind an AccumulateGrad node, or an undefined tensor.
torch::Tensor accumulated_variable(const torch::autograd::Node& node);

}  // namespace libprune::graph::detail
