#pragma once
// One forward pass, recorded from its autograd graph. This is what count_ops and the dependency
// graph are built on, for torch::nn C++ modules and Python nn.Modules alike: the model runs
// once with gradients on, and the graph is walked back from its outputs.
//   - AccumulateGrad nodes name the parameters (matched to the names the caller passes).
//   - Op nodes ("Convolution", "Addmm", "Cat", "View", ...) carry their forward output shapes,
//     the shapes of their inputs, and the attributes the pruner needs, read through one
//     version adapter (src/graph/autograd_adapter_*.cpp).
#include "libprune/nn/eval_mode.h"

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace libprune::graph {

enum class OpKind {
  Parameter,    // a leaf parameter (AccumulateGrad)
  Conv,         // convolution and transposed convolution
  MatMul,       // addmm, mm, bmm, matmul: linear layers when an operand is a parameter
  Norm,         // batch, layer, group and instance norm
  Pool,         // max/avg pooling, adaptive pooling, mean over spatial dims
  Elementwise,  // add, mul, activations, softmax, dropout, ...
  Shape,        // view, reshape, permute, transpose, flatten, expand, slice, select, cat, split, ...
  Embedding,
  Other         // anything the tracer has no rule for
};

const char* to_string(OpKind kind);

using Shape = std::vector<int64_t>;

struct TracedNode {
  std::string op;          // autograd node name without the "Backward<N>" suffix, e.g. "Convolution"
  std::string autograd_name;  // the full name, e.g. "ConvolutionBackward0"
  OpKind kind = OpKind::Other;
  std::vector<Shape> output_shapes;  // shapes of the forward op's outputs
  // One entry per forward input that autograd recorded (the node's next edges):
  std::vector<int> inputs;        // producing node, or -1 where the input needs no gradient
  std::vector<int> input_slots;   // which output of the producer
  std::vector<Shape> input_shapes;  // empty where unknown
  // Op attributes, by field name: "stride", "padding", "dilation", "groups", "transposed", "dim", ...
  std::map<std::string, std::vector<int64_t>> attrs;
  // Parameter nodes only:
  std::string param_name;  // empty when the tensor is not among the named parameters
  torch::Tensor param;

  bool has_attr(const std::string& key) const { return attrs.count(key) != 0; }
  int64_t attr(const std::string& key, int64_t fallback = 0) const {
    auto it = attrs.find(key);
    return it == attrs.end() || it->second.empty() ? fallback : it->second.front();
  }
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;
using Forward = std::function<std::vector<torch::Tensor>()>;

class Trace {
 public:
  // Runs `forward` once with autograd on and records its graph. Parameters in `params` that do
  // not require grad are switched on for the pass and restored afterwards. Throws when the
  // forward fails or returns nothing that depends on a parameter. `inputs`, when given, describes
  // the example inputs in that error (e.g. "shapes [1, 3, 224, 224]").
  static Trace capture(const Forward& forward, const NamedTensors& params, const std::string& inputs = {});

  // Convenience for C++ modules: module->eval() for the pass (train flags restored after), and
  // its named parameters.
  static Trace capture(torch::nn::Module& module, const Forward& forward, const std::string& inputs = {});

  // Nodes in topological order: every node comes after all of its inputs.
  const std::vector<TracedNode>& nodes() const { return nodes_; }
  // The nodes that produced the forward's outputs (in output order; -1 for an output that does
  // not depend on any parameter).
  const std::vector<int>& outputs() const { return outputs_; }
  const std::vector<Shape>& output_shapes() const { return output_shapes_; }

  // Whether node i is a parameter, a pure reshuffle (transpose, view, ...) of one, or an
  // elementwise op on parameters only (a fake-quantised or rescaled weight).
  bool is_parameter_derived(int i) const { return i >= 0 && param_derived_.at(static_cast<size_t>(i)); }

  // The named parameter whose value node i carries, seen through transposes, expands and
  // per-parameter transforms (elementwise ops on parameters only, such as an extension's
  // fake-quantised weight): empty when node i is an activation. `transposed` says whether its two
  // dims arrive swapped. `through_views` also walks back through any reshape (for naming layers).
  std::string parameter_source(int i, bool* transposed = nullptr, bool through_views = false) const;
  // The named 1-D parameter whose values node i carries, seen through per-parameter transforms and
  // views that only add or drop size-1 dims (a per-channel scale viewed as [1, C, 1, 1]); empty when
  // there is none. Views that move values (roll, as_strided, permutes of several dims) are not followed.
  std::string vector_parameter(int i) const;

  // A trace built by hand (tests of single op rules, tools): nodes in topological order.
  static Trace from_nodes(std::vector<TracedNode> nodes, std::vector<int> outputs, std::vector<Shape> output_shapes);

 private:
  void mark_parameter_derived();
  // For an elementwise node on parameters: the parameter-derived operand shaped like the output, or -1.
  int transformed_operand(const TracedNode& n) const;

  std::vector<TracedNode> nodes_;
  std::vector<int> outputs_;
  std::vector<Shape> output_shapes_;
  std::vector<bool> param_derived_;
};

// "shapes [1, 3, 224, 224]" for error messages.
std::string describe_inputs(const std::vector<torch::Tensor>& inputs);

// The module that owns a weight: "layer1.0.conv1.weight" -> "layer1.0.conv1"; empty when the
// parameter name does not end in ".weight".
std::string module_of_weight(const std::string& param_name);

}  // namespace libprune::graph
