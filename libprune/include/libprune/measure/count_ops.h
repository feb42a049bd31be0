#pragma once
// Parameters and multiply-accumulates of one forward pass, found by tracing the autograd graph,
// so it works for any model (C++ or Python) without per-layer hooks.
//
// What is counted (docs/count_ops.md has the full rules):
//   macs            conv and linear layers: for a conv, output elements x (in_channels/groups x kernel
//                   area); for a transposed conv, input elements x (out_channels/groups x kernel area);
//                   for a linear (addmm/mm/bmm with a parameter operand), output elements x in_features.
//                   This equals the usual hook-based count (thop, ptflops, torchprofile) exactly.
//   matmul_macs     matmuls between two activations (attention's QK^T and AV): output elements x K.
//   norm_elements   output elements of batch/layer/group/instance norms.
//   pool_elements   input elements read by pooling and spatial means.
//   elementwise_elements  output elements of adds, multiplies, activations, softmax.
//   params          elements of the distinct parameters the pass used.
#include "libprune/graph/trace.h"
#include "libprune/nn/inputs.h"

#include <map>
#include <string>

namespace libprune::measure {

struct LayerOps {
  std::string name;  // the weight's parameter name without ".weight", or the op name
  std::string op;    // "conv", "linear", "matmul"
  int64_t macs = 0;
};

struct OpCount {
  int64_t params = 0;
  int64_t macs = 0;
  int64_t matmul_macs = 0;
  int64_t norm_elements = 0;
  int64_t pool_elements = 0;
  int64_t elementwise_elements = 0;
  std::vector<LayerOps> layers;              // one entry per conv, linear and activation matmul
  std::map<std::string, int64_t> unknown_ops;  // ops with no counting rule, by name and count
};

// From a trace. For a model only a callable can run (a Python module, say), capture it first:
// count_ops(graph::Trace::capture(forward, named_params)), with the model in eval mode so
// batch-norm statistics are not updated; the module overloads below do that themselves.
OpCount count_ops(const graph::Trace& trace);

// For a C++ module: eval mode for the pass (train flags restored), then counts.
OpCount count_ops(torch::nn::Module& module, const graph::Forward& forward, const std::string& inputs = {});

// For any module with forward(Tensor) (zoo models, ModuleHolders): count_ops(model, x).
template <typename ModuleLike>
OpCount count_ops(ModuleLike& model, const torch::Tensor& input) {
  return count_ops(*model, graph::Forward([&] { return std::vector<torch::Tensor>{model->forward(input)}; }),
                   graph::describe_inputs({input}));
}

// For models that take named inputs (zoo models, through forward_inputs): count_ops(model, inputs).
template <typename ModuleLike>
OpCount count_ops(ModuleLike& model, const nn::Inputs& inputs) {
  return count_ops(*model, graph::Forward([&] { return std::vector<torch::Tensor>{model->forward_inputs(inputs)}; }),
                   inputs.describe());
}

}  // namespace libprune::measure
