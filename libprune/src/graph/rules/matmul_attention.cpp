// Matrix products: linear layers (a parameter operand) and products of two activations, where
// attention heads become units.
#include "rules.h"

namespace libprune::graph::rules {
namespace {

void not_understood(RuleContext& c, int i) { c.pin_inputs(i, c.why(i, "matrix product of this form is not understood")); }

// [B, M, K] x [B, K, N] -> [B, M, N] with channels in any of B, M (lhs), K (both), N (rhs). A
// contracted channel pairs the two operands' elements. Where channels sit in the batch (heads
// merged into it), every channel contracted or carried within one batch entry joins that entry's
// unit: the output has one value per head, so a head goes whole. Returns false after pinning.
bool batched_product(RuleContext& c, int i, const Space& a, const Shape& as, const Space& b, const Shape& bs,
                     const Shape& os, Space* out) {
  if (!a.tracked && !b.tracked) return true;
  auto fail = [&](const std::string& what) {
    c.pin_inputs(i, c.why(i, what));
    return false;
  };
  if (as.size() != 3 || bs.size() != 3 || os.size() != 3) return fail("matrix product of operands of unknown shape");
  if ((a.has(1) && a.has(2)) || (b.has(1) && b.has(2))) return fail("channels on both dims of one operand");
  if (a.has(1) && b.has(2)) return fail("an outer product of two channel dimensions");
  if (a.tracked && b.tracked && a.has(2) != b.has(1)) return fail("contracts channels with a dim that has none");
  if (a.tracked && b.tracked) c.mark_attention();
  if ((a.has(2) && !b.tracked) || (b.has(1) && !a.tracked)) {
    return fail("contracts channels with an operand that has no traced channels");
  }
  torch::Tensor am = a.tracked ? RuleContext::element_map(a, as) : torch::Tensor();
  torch::Tensor bm = b.tracked ? RuleContext::element_map(b, bs) : torch::Tensor();
  if (a.has(2) && b.has(1)) c.unite_maps(am.select(1, 0), bm.select(2, 0));
  // What each operand carries into the output, narrowed over K.
  torch::Tensor ao, bo;
  if (am.defined()) {
    if (!a.has(2)) ao = am;
    else if (a.has(0)) ao = c.collapse(am, 2);
  }
  if (bm.defined()) {
    if (!b.has(1)) bo = bm;
    else if (b.has(0)) bo = c.collapse(bm, 1);
  }
  if (ao.defined() && bo.defined()) {
    // Both bring the batch channels: one entry's lhs and rhs channels are one unit.
    if (!a.has(0) || !b.has(0) || a.has(1)) return fail("channels of both operands outside a shared batch");
    c.unite_maps(ao, c.collapse(bo, 2));
  }
  const torch::Tensor& src = bo.defined() && (b.has(2) || !ao.defined()) ? bo : ao;
  if (!src.defined()) return true;
  *out = RuleContext::from_map(src.expand(os));
  if (!out->tracked) return fail("channels of the product could not be followed");
  return true;
}

// Two activations in a plain matrix product: a batched product with a batch of one.
void activation_mm(RuleContext& c, int i) {
  Space a = c.input(i, 0), b = c.input(i, 1);
  Shape as = c.in_shape(i, 0), bs = c.in_shape(i, 1), os = c.out_shape(i);
  if (as.size() != 2 || bs.size() != 2 || os.size() != 2) {
    return not_understood(c, i);
  }
  a.shift(1);
  b.shift(1);
  as.insert(as.begin(), 1);
  bs.insert(bs.begin(), 1);
  os.insert(os.begin(), 1);
  Space out;
  if (!batched_product(c, i, a, as, b, bs, os, &out) || !out.tracked) return;
  if (out.has(0)) return not_understood(c, i);
  out.shift(-1);
  c.set(i, out);
}

// addmm(bias, x, w^T) and mm(x, w^T): a linear layer when the right operand is a parameter.
void mm(RuleContext& c, int i, bool with_bias) {
  const size_t lhs = with_bias ? 1 : 0, rhs = lhs + 1;
  bool t = false;
  const std::string w = c.parameter(i, rhs, &t);
  const Shape ws = c.in_shape(i, rhs);
  const Space& x = c.input(i, lhs);
  if (!w.empty() && ws.size() == 2) {
    const int64_t k = ws[0], nout = ws[1];
    const bool x_ok = x.at(1) && static_cast<int64_t>(x.elems.size()) == k;
    return dense(c, i, x, x_ok, w, t ? 1 : 0, with_bias ? c.parameter(i, 0) : std::string{}, k, nout);
  }
  if (!with_bias) return activation_mm(c, i);
  not_understood(c, i);
}

void bmm(RuleContext& c, int i) {
  Space out;
  if (batched_product(c, i, c.input(i, 0), c.in_shape(i, 0), c.input(i, 1), c.in_shape(i, 1), c.out_shape(i), &out) &&
      out.tracked) {
    c.set(i, out);
  }
}

}  // namespace

void add_matmul_attention(const Add& add) {
  add("Addmm", OpKind::MatMul, [](RuleContext& c, int i) { mm(c, i, true); });
  add("Mm", OpKind::MatMul, [](RuleContext& c, int i) { mm(c, i, false); });
  add("Bmm", OpKind::MatMul, bmm);
  add_all(add, {"Matmul", "Baddbmm", "Addbmm"}, OpKind::MatMul, not_understood);
}

}  // namespace libprune::graph::rules
