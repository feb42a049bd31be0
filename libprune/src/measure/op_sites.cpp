#include "libprune/measure/op_sites.h"

#include <functional>
#include <map>
#include <numeric>
#include <sstream>

namespace libprune::measure {
namespace {

int64_t shape_product(const graph::Shape& s, size_t from = 0, size_t to = SIZE_MAX) {
  const size_t end = std::min(to, s.size());
  if (from >= end) return 1;
  return std::accumulate(s.begin() + static_cast<std::ptrdiff_t>(from), s.begin() + static_cast<std::ptrdiff_t>(end),
                         int64_t{1}, std::multiplies<>());
}

std::string joined(const std::vector<int64_t>& v, const char* sep) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? sep : "") << v[i];
  return s.str();
}

// The linear layer a matrix product computes with a named 2-D weight applied as x W^T (nn.Linear),
// or false.
bool linear_site(const graph::Trace& trace, const graph::TracedNode& n, const std::map<std::string, graph::Shape>& shapes,
                 OpSite* site) {
  const bool with_bias = n.op == "Addmm";
  if (!with_bias && n.op != "Mm" && n.op != "Matmul") return false;
  const size_t lhs = with_bias ? 1 : 0, rhs = lhs + 1;
  if (rhs >= n.inputs.size() || !trace.is_parameter_derived(n.inputs[rhs]) || trace.is_parameter_derived(n.inputs[lhs])) {
    return false;
  }
  bool transposed = false;
  const auto name = trace.parameter_source(n.inputs[rhs], &transposed);
  const auto it = shapes.find(name);
  if (name.empty() || !transposed || it == shapes.end() || it->second.size() != 2) return false;
  if (lhs >= n.input_shapes.size() || n.input_shapes[lhs].empty() || n.output_shapes.empty()) return false;
  site->weight = name;
  site->kind = "linear";
  site->input = n.input_shapes[lhs];
  site->weight_shape = it->second;
  site->output = n.output_shapes.front();
  return site->input.back() == site->weight_shape[1];
}

// The layer site whose output node i carries, seen back through activations, adds (their first
// input) and norms that keep the shape; none (npos) otherwise.
size_t source_layer(const graph::Trace& trace, const std::map<int, size_t>& layer_of_node, int i) {
  while (i >= 0) {
    if (const auto it = layer_of_node.find(i); it != layer_of_node.end()) return it->second;
    const auto& n = trace.nodes()[static_cast<size_t>(i)];
    const bool passes = n.kind == graph::OpKind::Elementwise || n.kind == graph::OpKind::Norm;
    if (!passes || n.inputs.empty() || n.output_shapes.empty() || n.input_shapes.empty() ||
        n.input_shapes[0] != n.output_shapes[0]) {
      return std::string::npos;
    }
    i = trace.is_parameter_derived(n.inputs[0]) ? -1 : n.inputs[0];
  }
  return std::string::npos;
}

// ReLUs, hardtanhs and adds of two activations on the layers' outputs, after the layers.
void add_activation_sites(const graph::Trace& trace, const std::map<int, size_t>& layer_of_node,
                          std::vector<OpSite>& sites) {
  std::map<std::string, int> count;
  const size_t layers = sites.size();
  for (const auto& n : trace.nodes()) {
    const std::string kind = n.op == "Relu" ? "relu" : n.op == "Hardtanh" ? "hardtanh" : n.op == "Add" ? "add" : "";
    if (kind.empty() || n.inputs.empty() || n.output_shapes.empty() || n.input_shapes.empty() ||
        n.input_shapes[0] != n.output_shapes[0] || n.output_shapes[0].size() < 2) {
      continue;
    }
    if (kind == "add" && (n.inputs.size() < 2 || n.input_shapes.size() < 2 || n.input_shapes[1] != n.output_shapes[0] ||
                          n.inputs[1] < 0 || trace.is_parameter_derived(n.inputs[1]))) {
      continue;
    }
    if (trace.is_parameter_derived(n.inputs[0])) continue;
    const size_t src = source_layer(trace, layer_of_node, n.inputs[0]);
    if (src >= layers) continue;
    OpSite site;
    site.weight = sites[src].weight;
    site.kind = kind;
    site.input = n.output_shapes[0];
    site.name = site.weight + ":" + kind + "." + std::to_string(count[site.weight + kind]++);
    if (site.in_channels() != sites[src].out_channels()) continue;
    sites.push_back(std::move(site));
  }
}

}  // namespace

int64_t OpSite::in_channels() const {
  return kind == "conv" || (!layer() && input.size() == 4) ? input.at(1) : input.back();
}

int64_t OpSite::out_channels() const { return layer() ? weight_shape.at(0) : in_channels(); }

std::string OpSite::shape_key() const {
  std::ostringstream s;
  s << kind;
  if (kind == "conv") {
    s << " k" << joined(graph::Shape(weight_shape.begin() + 2, weight_shape.end()), "x") << " s" << joined(stride, "x")
      << " p" << joined(padding, "x") << " d" << joined(dilation, "x") << " g" << groups;
  }
  s << " in[" << joined(input, ",") << "] " << in_channels() << "->" << out_channels();
  return s.str();
}

int64_t OpSite::output_elements_per_channel() const {
  if (!layer()) return shape_product(input) / std::max<int64_t>(1, in_channels());
  if (kind == "conv") return output.at(0) * shape_product(output, 2);
  return shape_product(output) / std::max<int64_t>(1, output.back());
}

double OpSite::macs(int64_t in, int64_t out) const {
  if (!layer()) return 0;
  const int64_t kernel = kind == "conv" ? shape_product(weight_shape, 2) : 1;
  const int64_t per_output = depthwise() ? 1 : groups > 1 ? in / groups : in;
  return static_cast<double>(output_elements_per_channel()) * static_cast<double>(out) *
         static_cast<double>(per_output * kernel);
}

double OpSite::params(int64_t in, int64_t out) const {
  if (!layer()) return 0;
  const int64_t kernel = kind == "conv" ? shape_product(weight_shape, 2) : 1;
  const int64_t per_output = depthwise() ? 1 : groups > 1 ? in / groups : in;
  return static_cast<double>(out) * static_cast<double>(per_output * kernel);
}

std::function<void()> OpSite::runner(int64_t in, int64_t out, bool channels_last) const {
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  if (!layer()) {
    graph::Shape xs = input;
    xs[input.size() == 4 ? 1 : input.size() - 1] = out;
    auto a = torch::randn(xs, opts), b = torch::randn(xs, opts);
    if (channels_last && a.dim() == 4) {
      a = a.contiguous(torch::MemoryFormat::ChannelsLast);
      b = b.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    const std::string k = kind;
    return [a, b, k]() mutable {
      c10::InferenceMode guard;
      if (k == "add") a.add_(b);
      else if (k == "hardtanh") at::hardtanh_(a, 0, 6);
      else at::relu_(a);
    };
  }
  const bool dw = depthwise();
  if (dw) in = out;
  if (kind == "linear") {
    const int64_t rows = shape_product(input) / std::max<int64_t>(1, input.back());
    auto x = torch::randn({rows, in}, opts), w = torch::randn({out, in}, opts), b = torch::randn({out}, opts);
    return [x, w, b] {
      c10::InferenceMode guard;
      at::linear(x, w, b);
    };
  }
  graph::Shape xs = input, ws = weight_shape;
  xs[1] = in;
  ws[0] = out;
  ws[1] = dw ? 1 : in / (groups > 1 ? groups : 1);
  const int64_t g = dw ? out : groups;
  auto x = torch::randn(xs, opts), w = torch::randn(ws, opts), b = torch::randn({out}, opts);
  if (channels_last && x.dim() == 4) {
    x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    w = w.contiguous(torch::MemoryFormat::ChannelsLast);
  }
  const std::vector<int64_t> st = stride, pa = padding, di = dilation, zeros(stride.size(), 0);
  return [x, w, b, st, pa, di, zeros, g] {
    c10::InferenceMode guard;
    at::convolution(x, w, b, st, pa, di, false, zeros, g);
  };
}

std::vector<OpSite> op_sites(const graph::Trace& trace) {
  std::map<std::string, graph::Shape> shapes;
  for (const auto& n : trace.nodes()) {
    if (n.kind == graph::OpKind::Parameter && !n.param_name.empty() && !n.output_shapes.empty()) {
      shapes[n.param_name] = n.output_shapes.front();
    }
  }
  std::vector<OpSite> sites;
  std::map<int, size_t> layer_of_node;
  for (const auto& n : trace.nodes()) {
    OpSite site;
    if (n.kind == graph::OpKind::Conv) {
      if (n.attr("transposed") != 0 || n.inputs.size() < 2 || n.input_shapes.size() < 2 || n.output_shapes.empty()) continue;
      site.weight = trace.parameter_source(n.inputs[1]);
      const auto it = shapes.find(site.weight);
      if (site.weight.empty() || it == shapes.end() || n.input_shapes[0].size() < 3) continue;
      site.kind = "conv";
      site.input = n.input_shapes[0];
      site.weight_shape = it->second;
      site.output = n.output_shapes.front();
      site.stride = n.attrs.count("stride") ? n.attrs.at("stride") : std::vector<int64_t>{};
      site.padding = n.attrs.count("padding") ? n.attrs.at("padding") : std::vector<int64_t>{};
      site.dilation = n.attrs.count("dilation") ? n.attrs.at("dilation") : std::vector<int64_t>{};
      site.groups = n.attr("groups", 1);
      if (site.stride.size() + 2 != site.input.size()) continue;
    } else if (n.kind != graph::OpKind::MatMul || !linear_site(trace, n, shapes, &site)) {
      continue;
    }
    site.name = site.weight;
    layer_of_node[static_cast<int>(&n - trace.nodes().data())] = sites.size();
    sites.push_back(std::move(site));
  }
  add_activation_sites(trace, layer_of_node, sites);
  return sites;
}

}  // namespace libprune::measure
