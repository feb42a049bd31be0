#include "libprune/graph/trace.h"

#include "autograd_adapter.h"
#include "libprune/graph/op_rules.h"

#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace libprune::graph {

const char* to_string(OpKind kind) {
  switch (kind) {
    case OpKind::Parameter: return "parameter";
    case OpKind::Conv: return "conv";
    case OpKind::MatMul: return "matmul";
    case OpKind::Norm: return "norm";
    case OpKind::Pool: return "pool";
    case OpKind::Elementwise: return "elementwise";
    case OpKind::Shape: return "shape";
    case OpKind::Embedding: return "embedding";
    case OpKind::Other: return "other";
  }
  return "other";
}

namespace {

// "ConvolutionBackward0" -> "Convolution"; "torch::autograd::AccumulateGrad" -> "AccumulateGrad"; a
// C++ custom function's node, "torch::autograd::CppNode<ns::MyFunction>" -> "MyFunction".
std::string op_name(const std::string& autograd_name) {
  std::string s = autograd_name;
  const auto custom = s.find("CppNode<");
  if (custom != std::string::npos && s.back() == '>') s = s.substr(custom + 8, s.size() - custom - 9);
  const auto colon = s.rfind("::");
  if (colon != std::string::npos) s = s.substr(colon + 2);
  const auto pos = s.rfind("Backward");
  if (pos != std::string::npos) s = s.substr(0, pos);
  return s;
}

// Switches requires_grad on for the pass so every parameter shows up as an AccumulateGrad node.
class RequiresGradGuard {
 public:
  explicit RequiresGradGuard(const NamedTensors& params) {
    for (const auto& p : params) {
      if (p.second.defined() && !p.second.requires_grad() && p.second.is_floating_point()) {
        auto t = p.second;
        t.set_requires_grad(true);
        switched_.push_back(t);
      }
    }
  }
  ~RequiresGradGuard() {
    for (auto& t : switched_) t.set_requires_grad(false);
  }

 private:
  std::vector<torch::Tensor> switched_;
};

}  // namespace

std::string module_of_weight(const std::string& param_name) {
  const std::string suffix = ".weight";
  const size_t n = param_name.size(), k = suffix.size();
  if (n <= k || param_name.compare(n - k, k, suffix) != 0) return {};
  return param_name.substr(0, n - k);
}

std::string describe_inputs(const std::vector<torch::Tensor>& inputs) {
  std::ostringstream s;
  s << (inputs.size() == 1 ? "shape " : "shapes ");
  for (size_t i = 0; i < inputs.size(); ++i) {
    s << (i ? ", " : "");
    if (inputs[i].defined()) s << inputs[i].sizes(); else s << "(undefined)";
  }
  return s.str();
}

namespace {

using NodePtr = std::shared_ptr<torch::autograd::Node>;

// The forward, with autograd on and every parameter requiring grad; its failure named with the inputs.
std::vector<torch::Tensor> run_forward(const Forward& forward, const NamedTensors& params, const std::string& inputs) {
  auto failed = [&](const char* what) {
    TORCH_CHECK_VALUE(false, "the model's forward failed on the example inputs", inputs.empty() ? "" : " (" + inputs + ")",
                      ": ", what, "\nFix: pass example inputs the model accepts (batch, channels and size as in training)");
  };
  try {
    RequiresGradGuard requires_grad(params);
    torch::AutoGradMode grad_on(true);
    return forward();
  } catch (const c10::Error& e) {
    failed(e.what_without_backtrace());
  } catch (const std::exception& e) {
    failed(e.what());
  }
  return {};
}

// The autograd nodes behind `outputs`, every node after its inputs, and each one's position.
struct Order {
  std::vector<NodePtr> nodes;
  std::unordered_map<const torch::autograd::Node*, int> index;
};

// Iterative post-order DFS from the outputs: deep models (resnet152, BERT-large) would overflow a
// recursive walk's stack.
Order topological_order(const std::vector<torch::Tensor>& outputs) {
  Order order;
  std::unordered_set<const torch::autograd::Node*> visiting;
  for (const auto& out : outputs) {
    if (!out.defined() || !out.grad_fn()) continue;
    std::vector<std::pair<NodePtr, size_t>> stack{{out.grad_fn(), 0}};
    if (order.index.count(stack.back().first.get()) || visiting.count(stack.back().first.get())) continue;
    visiting.insert(stack.back().first.get());
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->num_outputs()) {
        const auto& edge = node->next_edge(next++);
        const auto* child = edge.function.get();
        if (child && !order.index.count(child) && !visiting.count(child)) {
          visiting.insert(child);
          stack.emplace_back(edge.function, 0);
        }
        continue;
      }
      order.index[node.get()] = static_cast<int>(order.nodes.size());
      order.nodes.push_back(node);
      stack.pop_back();
    }
  }
  return order;
}

// One node as the trace records it: op, shapes, inputs, attributes, and a parameter's name.
void read_node(const torch::autograd::Node& node, const Order& order,
               const std::unordered_map<const c10::TensorImpl*, std::string>& names, TracedNode& t) {
  t.autograd_name = node.name();
  t.op = op_name(t.autograd_name);
  t.kind = detail::op_kind(t.op);
  for (uint32_t k = 0; k < node.num_inputs(); ++k) t.output_shapes.push_back(detail::forward_output_shape(node, k));
  const auto n_inputs = node.num_outputs();
  t.inputs.assign(n_inputs, -1);
  t.input_slots.assign(n_inputs, 0);
  t.input_shapes.assign(n_inputs, Shape{});
  for (uint32_t k = 0; k < n_inputs; ++k) {
    const auto& edge = node.next_edge(k);
    if (!edge.is_valid()) continue;
    t.inputs[k] = order.index.at(edge.function.get());
    t.input_slots[k] = static_cast<int>(edge.input_nr);
    t.input_shapes[k] = detail::forward_output_shape(*edge.function, edge.input_nr);
  }
  if (t.kind == OpKind::Parameter) {
    t.param = detail::accumulated_variable(node);
    auto it = t.param.defined() ? names.find(t.param.unsafeGetTensorImpl()) : names.end();
    if (it != names.end()) t.param_name = it->second;
  } else {
    detail::read_saved_fields(node, t);
  }
}

}  // namespace

Trace Trace::capture(const Forward& forward, const NamedTensors& params, const std::string& inputs) {
  const auto outputs = run_forward(forward, params, inputs);
  std::unordered_map<const c10::TensorImpl*, std::string> names;
  for (const auto& p : params) {
    if (p.second.defined()) names.emplace(p.second.unsafeGetTensorImpl(), p.first);
  }
  const Order order = topological_order(outputs);
  Trace trace;
  trace.nodes_.resize(order.nodes.size());
  for (size_t i = 0; i < order.nodes.size(); ++i) read_node(*order.nodes[i], order, names, trace.nodes_[i]);
  trace.mark_parameter_derived();
  for (const auto& out : outputs) {
    trace.output_shapes_.push_back(out.defined() ? Shape(out.sizes().begin(), out.sizes().end()) : Shape{});
    trace.outputs_.push_back(out.defined() && out.grad_fn() ? order.index.at(out.grad_fn().get()) : -1);
  }
  TORCH_CHECK_VALUE(!order.nodes.empty(), "trace: the forward pass produced no output that depends on a parameter, "
                    "so there is no graph to read. Fix: check that the model uses its parameters and that the forward "
                    "is not run under torch.no_grad() or inference mode");
  return trace;
}

void Trace::mark_parameter_derived() {
  param_derived_.assign(nodes_.size(), false);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const auto& t = nodes_[i];
    bool any = false, all = true;
    for (int in : t.inputs) {
      if (in < 0) continue;
      const bool derived = param_derived_[static_cast<size_t>(in)];
      any = any || derived;
      all = all && derived;
    }
    param_derived_[i] = t.kind == OpKind::Parameter || (t.kind == OpKind::Shape && any) ||
                        (t.kind == OpKind::Elementwise && any && all);
  }
}

// A transform of a parameter (w * scale, fake quantization): follow the operand shaped like the output.
int Trace::transformed_operand(const TracedNode& n) const {
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    if (is_parameter_derived(n.inputs[k]) && k < n.input_shapes.size() && !n.output_shapes.empty() &&
        n.input_shapes[k] == n.output_shapes[0]) {
      return n.inputs[k];
    }
  }
  return -1;
}

namespace {

Shape without_unit_dims(const Shape& s) {
  Shape out;
  for (int64_t d : s) {
    if (d != 1) out.push_back(d);
  }
  return out;
}

// A reshape that only adds or drops size-1 dims: every value keeps its place.
bool unit_dims_view(const TracedNode& n) {
  static const std::set<std::string> kReshapes{"View", "ReshapeAlias", "UnsafeView", "Unsqueeze", "Squeeze", "Flatten"};
  return kReshapes.count(n.op) && n.input_shapes.size() == 1 && n.output_shapes.size() == 1 &&
         without_unit_dims(n.input_shapes[0]) == without_unit_dims(n.output_shapes[0]);
}

}  // namespace

std::string Trace::vector_parameter(int i) const {
  while (i >= 0 && param_derived_[static_cast<size_t>(i)]) {
    const auto& n = nodes_[static_cast<size_t>(i)];
    if (n.kind == OpKind::Parameter) {
      return n.output_shapes.size() == 1 && n.output_shapes[0].size() == 1 ? n.param_name : std::string();
    }
    if (n.inputs.empty()) return {};
    i = n.kind == OpKind::Elementwise ? transformed_operand(n) : unit_dims_view(n) ? n.inputs[0] : -1;
  }
  return {};
}

std::string Trace::parameter_source(int i, bool* transposed, bool through_views) const {
  bool t = false;
  while (i >= 0 && param_derived_[static_cast<size_t>(i)]) {
    const auto& n = nodes_[static_cast<size_t>(i)];
    if (n.kind == OpKind::Parameter) {
      if (transposed) *transposed = t;
      return n.param_name;
    }
    if (n.inputs.empty()) return {};
    int next = -1;
    if (n.kind == OpKind::Elementwise) {
      next = transformed_operand(n);
    } else if (n.op == "T" || n.op == "Transpose") {
      t = !t;
      next = n.inputs[0];
    } else if (n.op == "Expand") {
      // An Expand keeps the parameter's dims (a class token broadcast over the batch).
      const bool same_rank = !n.output_shapes.empty() && !n.input_shapes.empty() &&
                             n.output_shapes[0].size() == n.input_shapes[0].size();
      next = same_rank ? n.inputs[0] : -1;
    } else if (through_views) {
      next = n.inputs[0];
    }
    i = next;
  }
  return {};
}

Trace Trace::from_nodes(std::vector<TracedNode> nodes, std::vector<int> outputs, std::vector<Shape> output_shapes) {
  Trace trace;
  trace.nodes_ = std::move(nodes);
  trace.outputs_ = std::move(outputs);
  trace.output_shapes_ = std::move(output_shapes);
  for (auto& n : trace.nodes_) {
    if (n.kind == OpKind::Other) n.kind = detail::op_kind(n.op);
  }
  trace.mark_parameter_derived();
  return trace;
}

Trace Trace::capture(torch::nn::Module& module, const Forward& forward, const std::string& inputs) {
  nn::EvalModeGuard eval(module);
  NamedTensors params;
  for (const auto& p : module.named_parameters(true)) params.emplace_back(p.key(), p.value());
  return capture(forward, params, inputs);
}

}  // namespace libprune::graph
