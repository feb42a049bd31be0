// Elementwise ops: their inputs' channels are the same channels (broadcasting aligns from the
// right); a parameter operand along the channels (a PReLU slope, a layer scale) is cut with them.
#include "rules.h"

namespace libprune::graph::rules {
namespace {

// The operands' channels united into one space; untracked when none carries channels. Returns false
// (after pinning) when they carry them in different layouts.
bool united_inputs(RuleContext& c, int i, int64_t rank, Space* result) {
  const auto& n = c.node(i);
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const Space& s = c.input(i, k);
    if (!s.tracked) continue;
    const Shape in = c.in_shape(i, k);
    bool ok = !in.empty();
    if (ok) {
      Space aligned = s;
      aligned.shift(rank - static_cast<int64_t>(in.size()));
      if (!result->tracked) {
        *result = aligned;
      } else if (result->dims == aligned.dims && result->elems.size() == aligned.elems.size()) {
        c.unite(result->elems, aligned.elems);
      } else {
        ok = false;
      }
    }
    if (!ok) {
      c.pin_inputs(i, c.why(i, "inputs carry channels in different layouts"));
      return false;
    }
  }
  return true;
}

// Operand k carries no channels: fine when it broadcasts over them, a member when it is a parameter
// along them, otherwise the channels are pinned. Returns false after pinning.
bool other_operand(RuleContext& c, int i, size_t k, int64_t rank, const Space& result, bool prelu) {
  const auto& n = c.node(i);
  const Shape in = c.in_shape(i, k);
  const int64_t shift = rank - static_cast<int64_t>(in.size());
  if (n.inputs[k] < 0 && in.empty()) {
    // A tensor that needs no grad and whose shape autograd did not keep (an add's other operand:
    // BERT's attention-mask bias [B, 1, 1, T] on the scores). Taken as broadcasting over the
    // channels: were it laid along them, its size would no longer match after a cut, and the
    // forward fails loudly (the pruner's verification then pins the group); it cannot go wrong
    // silently. Pinning here had pinned every head of every masked attention.
    return true;
  }
  bool along = false;
  for (int64_t d : result.dims) {
    const int64_t local = d - shift;
    if (local >= 0 && local < static_cast<int64_t>(in.size()) && in[static_cast<size_t>(local)] != 1) along = true;
  }
  const std::string p = c.parameter(i, k);
  // PReLU's slope applies along dim 1, not right-aligned like broadcasting.
  if (prelu && !p.empty() && in.size() == 1 && in[0] > 1) {
    if (result.at(1) && in[0] == static_cast<int64_t>(result.elems.size())) {
      c.member(p, 0, result.elems);
      return true;
    }
    c.pin(result, c.why(i, "PReLU slope does not run along the channels"));
    return false;
  }
  if (!along) return true;
  if (!p.empty() && result.single() && result.dims[0] - shift >= 0) {
    c.member(p, result.dims[0] - shift, result.elems);
    return true;
  }
  if (p.empty() && result.single()) {
    const int64_t local = result.dims[0] - shift;
    int64_t larger = 0;
    for (int64_t d : in) larger += d != 1 ? 1 : 0;
    const auto size = static_cast<int64_t>(result.elems.size());
    // The operand runs along the channels only: a 1-D parameter seen through it has their size.
    if (larger == 1 && local >= 0 && local < static_cast<int64_t>(in.size()) && in[static_cast<size_t>(local)] == size) {
      const std::string viewed = c.trace().vector_parameter(n.inputs[k]);
      if (!viewed.empty()) {
        c.member(viewed, 0, result.elems);
        return true;
      }
    }
  }
  c.pin(result, c.why(i, "an operand without traced channels does not broadcast over them"));
  return false;
}

// `prelu`: a slope operand applies along dim 1 (PReLU), not right-aligned.
void elementwise(RuleContext& c, int i, bool prelu) {
  const auto& n = c.node(i);
  const auto rank = static_cast<int64_t>(c.out_shape(i).size());
  Space result;
  if (!united_inputs(c, i, rank, &result) || !result.tracked) return;
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    if (!c.input(i, k).tracked && !other_operand(c, i, k, rank, result, prelu)) return;
  }
  c.set(i, result);
}

}  // namespace

void add_elementwise(const Add& add) {
  add("Prelu", OpKind::Elementwise, [](RuleContext& c, int i) { elementwise(c, i, true); });
  add_all(add,
          {"Add", "Sub", "Mul", "Div", "Relu", "Hardtanh", "Gelu", "Silu", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid",
           "Softmax", "LogSoftmax", "LeakyRelu", "Elu", "Neg", "Exp", "Pow", "Sqrt", "Rsqrt", "NativeDropout",
           "Mish", "Clamp", "Where",
           // Fake quantization (QAT): the value is rounded in place, channels pass through.
           "FakeQuantizePerTensorAffineCachemask", "FakeQuantizePerChannelAffineCachemask",
           "FakeQuantizeLearnablePerTensorAffine", "FakeQuantizeLearnablePerChannelAffine", "FusedMovingAvgObsFqHelper",
           "FastFakeQuantize"},
          OpKind::Elementwise, [](RuleContext& c, int i) { elementwise(c, i, false); });
}

}  // namespace libprune::graph::rules
