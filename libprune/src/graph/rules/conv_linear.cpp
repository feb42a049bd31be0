// Convolutions (dense, depthwise, grouped, transposed), embeddings, and the dense() helper that
// linear layers share with them.
#include "rules.h"

namespace libprune::graph::rules {

void add_all(const Add& add, std::initializer_list<const char*> ops, OpKind kind, const OpRule& rule) {
  for (const char* op : ops) add(op, kind, rule);
}

void dense(RuleContext& c, int i, const Space& x, bool x_ok, const std::string& weight, int64_t in_dim,
           const std::string& bias, int64_t n_in, int64_t n_out) {
  auto in = x_ok ? x.elems : c.fresh(n_in);
  if (!x_ok) {
    c.pin(in, c.why(i, "inputs come from the model input or an untracked op"));
    c.pin(x, c.why(i, "input layout not understood"));
  }
  auto out = c.fresh(n_out);
  c.member(weight, in_dim, in);
  c.member(weight, 1 - in_dim, out);
  c.member(bias, 0, out);
  c.set(i, Space::along(1, out));
}

namespace {

// Grouped conv with as many outputs as inputs (ResNeXt, RegNet): output channel c reads the inputs
// of its own group, so channel c in is channel c out, and every group must lose the same local
// indices. Channels with the same index within their group are one unit.
void equal_groups(RuleContext& c, int i, const Space& x, const std::string& w, const std::string& b, int64_t groups) {
  const int64_t width = static_cast<int64_t>(x.elems.size()) / groups;
  for (int64_t k = 1; k < groups; ++k) {
    for (int64_t j = 0; j < width; ++j) c.unite(x.elems[static_cast<size_t>(j)], x.elems[static_cast<size_t>(k * width + j)]);
  }
  c.member(w, 0, x.elems);
  c.member(w, 1, std::vector<int64_t>(x.elems.begin(), x.elems.begin() + width));
  c.member(b, 0, x.elems);
  c.set(i, Space::along(1, x.elems));
}

void conv(RuleContext& c, int i) {
  const auto& n = c.node(i);
  const std::string w = c.parameter(i, 1);
  const std::string b = n.inputs.size() > 2 ? c.parameter(i, 2) : std::string{};
  const Space& x = c.input(i, 0);
  const Shape ws = c.in_shape(i, 1);
  if (w.empty() || ws.size() < 3) return c.pin(x, c.why(i, "weight is not a named parameter"));
  const bool transposed = n.attr("transposed") != 0;
  const int64_t groups = n.attr("groups", 1);
  const int64_t cin = transposed ? ws[0] : ws[1] * groups;
  const int64_t cout = transposed ? ws[1] * groups : ws[0];
  const bool x_ok = x.at(1) && static_cast<int64_t>(x.elems.size()) == cin;
  if (groups == 1) return dense(c, i, x, x_ok, w, transposed ? 0 : 1, b, cin, cout);
  if (groups == cin && cin == cout && x_ok) {
    // Depthwise: channel c in is channel c out.
    c.member(w, 0, x.elems);
    c.member(b, 0, x.elems);
    return c.set(i, Space::along(1, x.elems));
  }
  if (!transposed && cin == cout && cin % groups == 0 && x_ok) return equal_groups(c, i, x, w, b, groups);
  const std::string reason = c.why(i, "grouped conv (groups=" + std::to_string(groups) + ", in " + std::to_string(cin) +
                                          ", out " + std::to_string(cout) + ") whose groups cannot be cut evenly");
  c.pin(x, reason);
  auto in = c.fresh(ws[1]);
  auto out = c.fresh(cout);
  c.pin(in, reason);
  c.pin(out, reason);
  c.member(w, 1, in);
  c.member(w, 0, out);
  c.member(b, 0, out);
  c.set(i, Space::along(1, out));
}

void embedding(RuleContext& c, int i) {
  const std::string w = c.parameter(i, 0);
  const Shape ws = c.in_shape(i, 0);
  const Shape out = c.out_shape(i);
  if (w.empty() || ws.size() != 2 || out.empty()) return;
  auto elems = c.fresh(ws[1]);
  c.member(w, 1, elems);
  c.set(i, Space::along(static_cast<int64_t>(out.size()) - 1, elems));
}

}  // namespace

void add_conv_linear(const Add& add) {
  add_all(add, {"Convolution", "ConvolutionBackwardOverrideable"}, OpKind::Conv, conv);
  add("Embedding", OpKind::Embedding, embedding);
}

}  // namespace libprune::graph::rules
