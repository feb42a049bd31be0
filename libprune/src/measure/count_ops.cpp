#include "libprune/measure/count_ops.h"

#include <numeric>
#include <unordered_set>

namespace libprune::measure {
namespace {

int64_t numel(const graph::Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>());
}

std::string layer_name(const std::string& param) {
  const auto module = graph::module_of_weight(param);
  return module.empty() ? param : module;
}

// Inner dimension K of a matrix product, from whichever operand shape is known.
int64_t inner_dim(const graph::TracedNode& n, size_t lhs, size_t rhs) {
  if (lhs < n.input_shapes.size() && !n.input_shapes[lhs].empty()) return n.input_shapes[lhs].back();
  if (rhs < n.input_shapes.size() && n.input_shapes[rhs].size() >= 2) {
    const auto& s = n.input_shapes[rhs];
    return s[s.size() - 2];
  }
  return 0;
}

}  // namespace

OpCount count_ops(const graph::Trace& trace) {
  OpCount c;
  std::unordered_set<const c10::TensorImpl*> seen_params;
  const auto& nodes = trace.nodes();
  for (size_t i = 0; i < nodes.size(); ++i) {
    const auto& n = nodes[i];
    const graph::Shape out = n.output_shapes.empty() ? graph::Shape{} : n.output_shapes.front();
    switch (n.kind) {
      case graph::OpKind::Parameter:
        if (n.param.defined() && seen_params.insert(n.param.unsafeGetTensorImpl()).second) c.params += n.param.numel();
        break;
      case graph::OpKind::Conv: {
        const auto& w = n.input_shapes.size() > 1 ? n.input_shapes[1] : graph::Shape{};
        if (w.size() < 3) {
          ++c.unknown_ops[n.op + " (weight shape unknown)"];
          break;
        }
        const int64_t per_element = numel(w) / w[0];  // (in/groups) x kernel, or (out/groups) x kernel
        const bool transposed = n.attr("transposed") != 0;
        const int64_t elements = transposed ? numel(n.input_shapes[0]) : numel(out);
        const int64_t macs = elements * per_element;
        c.macs += macs;
        c.layers.push_back({layer_name(trace.parameter_source(n.inputs[1], nullptr, true)), "conv", macs});
        break;
      }
      case graph::OpKind::MatMul: {
        // Operand positions: addmm(bias, mat1, mat2); mm/bmm/matmul(self, mat2); baddbmm(self, b1, b2).
        const bool with_bias = n.op == "Addmm" || n.op == "Baddbmm" || n.op == "Addbmm";
        const size_t lhs = with_bias ? 1 : 0, rhs = lhs + 1;
        const int64_t macs = numel(out) * inner_dim(n, lhs, rhs);
        std::string param;
        for (size_t k : {rhs, lhs}) {
          if (k < n.inputs.size() && trace.is_parameter_derived(n.inputs[k])) {
            param = trace.parameter_source(n.inputs[k], nullptr, true);
            if (param.empty()) param = "linear";
            break;
          }
        }
        if (!param.empty()) {
          c.macs += macs;
          c.layers.push_back({layer_name(param), "linear", macs});
        } else {
          c.matmul_macs += macs;
          c.layers.push_back({n.op, "matmul", macs});
        }
        break;
      }
      case graph::OpKind::Norm: c.norm_elements += numel(out); break;
      case graph::OpKind::Pool:
        c.pool_elements += n.input_shapes.empty() || n.input_shapes[0].empty() ? numel(out) : numel(n.input_shapes[0]);
        break;
      case graph::OpKind::Elementwise: c.elementwise_elements += numel(out); break;
      case graph::OpKind::Shape:
      case graph::OpKind::Embedding: break;
      case graph::OpKind::Other: ++c.unknown_ops[n.op]; break;
    }
  }
  return c;
}

OpCount count_ops(torch::nn::Module& module, const graph::Forward& forward, const std::string& inputs) {
  return count_ops(graph::Trace::capture(module, forward, inputs));
}

}  // namespace libprune::measure
