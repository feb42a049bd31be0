#include "libprune/graph/dependency_graph.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <unordered_map>

namespace libprune::graph {
namespace {

int64_t prod(const Shape& s, size_t b, size_t e) {
  int64_t p = 1;
  for (size_t i = b; i < e && i < s.size(); ++i) p *= s[i];
  return p;
}

// The channel elements of one activation: the dims in `dims` (ascending, not necessarily side by
// side: attention heads sit in [batch, heads, tokens, head_dim]), flattened row-major. The same
// element may appear at several positions (a flatten repeats a channel over its spatial block, a
// batch-head merge over the batch).
struct Space {
  bool tracked = false;
  std::vector<int64_t> dims;
  std::vector<int64_t> elems;
  bool single() const { return tracked && dims.size() == 1; }
  bool at(int64_t d) const { return single() && dims[0] == d; }
  bool has(int64_t d) const { return tracked && std::find(dims.begin(), dims.end(), d) != dims.end(); }
  bool contiguous() const { return tracked && !dims.empty() && dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size()); }
  void shift(int64_t by) {
    for (auto& d : dims) d += by;
  }
};

int64_t prod_of(const Shape& s, const std::vector<int64_t>& dims) {
  int64_t p = 1;
  for (auto d : dims) p *= d >= 0 && d < static_cast<int64_t>(s.size()) ? s[static_cast<size_t>(d)] : 0;
  return p;
}

class Builder {
 public:
  Builder(const Trace& trace, const NamedTensors& buffers) : trace_(trace) {
    for (const auto& b : buffers) buffer_names_.insert({b.first, b.second.dim() > 0 ? b.second.size(0) : 0});
  }

  std::vector<Group> run() {
    const auto& nodes = trace_.nodes();
    spaces_.resize(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i) {
      spaces_[i].assign(std::max<size_t>(1, nodes[i].output_shapes.size()), Space{});
      visit(static_cast<int>(i));
    }
    for (size_t o = 0; o < trace_.outputs().size(); ++o) {
      const int n = trace_.outputs()[o];
      if (n >= 0) pin(spaces_[static_cast<size_t>(n)][0], "model output " + std::to_string(o) + " (its shape must not change)");
    }
    return groups();
  }

 private:
  const Trace& trace_;
  std::map<std::string, int64_t> buffer_names_;
  std::vector<std::vector<Space>> spaces_;
  std::vector<int64_t> parent_;
  std::map<int64_t, std::string> reasons_;  // element -> why it is pinned (ordered: deterministic reasons)
  std::map<Member, std::vector<int64_t>> members_;  // member -> element per index
  std::vector<int64_t> layer_normed_;  // elements a LayerNorm normalises
  bool attention_ = false;  // the model multiplies two activations (attention)

  // ---- union-find over elements
  std::vector<int64_t> fresh(int64_t n) {
    std::vector<int64_t> out(static_cast<size_t>(n));
    for (auto& e : out) {
      e = static_cast<int64_t>(parent_.size());
      parent_.push_back(e);
    }
    return out;
  }
  int64_t find(int64_t e) {
    while (parent_[static_cast<size_t>(e)] != e) {
      parent_[static_cast<size_t>(e)] = parent_[static_cast<size_t>(parent_[static_cast<size_t>(e)])];
      e = parent_[static_cast<size_t>(e)];
    }
    return e;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent_[static_cast<size_t>(std::max(a, b))] = std::min(a, b);
  }
  void unite(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) unite(a[i], b[i]);
  }
  void pin(const std::vector<int64_t>& elems, const std::string& reason) {
    for (auto e : elems) reasons_.emplace(e, reason);
  }
  void pin(const Space& s, const std::string& reason) {
    if (s.tracked) pin(s.elems, reason);
  }

  // ---- helpers on nodes
  const TracedNode& node(int i) const { return trace_.nodes()[static_cast<size_t>(i)]; }
  Space input(int i, size_t k) const {
    const auto& n = node(i);
    if (k >= n.inputs.size() || n.inputs[k] < 0) return {};
    const auto& outs = spaces_[static_cast<size_t>(n.inputs[k])];
    const auto slot = static_cast<size_t>(n.input_slots[k]);
    return slot < outs.size() ? outs[slot] : Space{};
  }
  Shape in_shape(int i, size_t k) const {
    const auto& n = node(i);
    return k < n.input_shapes.size() ? n.input_shapes[k] : Shape{};
  }
  Shape out_shape(int i, size_t slot = 0) const {
    const auto& n = node(i);
    return slot < n.output_shapes.size() ? n.output_shapes[slot] : Shape{};
  }
  // The named parameter behind input k, directly or through t()/transpose()/expand(); `transposed`
  // says whether its two dims arrive swapped.
  std::string param_of(int i, size_t k, bool* transposed = nullptr) const {
    const auto& n = node(i);
    if (k >= n.inputs.size() || n.inputs[k] < 0) return {};
    int cur = n.inputs[k];
    bool t = false;
    // An Expand keeps the parameter's dims (a class token broadcast over the batch).
    while (node(cur).kind == OpKind::Shape &&
           (node(cur).op == "T" || node(cur).op == "Transpose" || node(cur).op == "Expand") &&
           !node(cur).inputs.empty() && node(cur).inputs[0] >= 0) {
      if (node(cur).op != "Expand") t = !t;
      else if (node(cur).output_shapes.empty() || node(cur).input_shapes.empty() ||
               node(cur).output_shapes[0].size() != node(cur).input_shapes[0].size()) return {};
      cur = node(cur).inputs[0];
    }
    if (node(cur).kind != OpKind::Parameter) return {};
    if (transposed) *transposed = t;
    return node(cur).param_name;
  }
  std::string why(int i, const std::string& what) const { return node(i).op + ": " + what; }

  // Records that index j of `tensor` along `dim` is element elems[j].
  void member(const std::string& tensor, int64_t dim, const std::vector<int64_t>& elems) {
    if (tensor.empty()) return;
    auto [it, inserted] = members_.emplace(Member{tensor, dim}, elems);
    if (!inserted) unite(it->second, elems);  // a layer used twice: both uses are one channel
  }
  void companion_buffers(const std::string& weight, const std::vector<int64_t>& elems) {
    const auto dot = weight.rfind('.');
    const std::string prefix = dot == std::string::npos ? "" : weight.substr(0, dot + 1);
    for (const char* b : {"running_mean", "running_var"}) {
      auto it = buffer_names_.find(prefix + b);
      if (it != buffer_names_.end() && it->second == static_cast<int64_t>(elems.size())) member(prefix + b, 0, elems);
    }
  }
  Space single(int64_t dim, std::vector<int64_t> elems) const {
    Space s;
    s.tracked = true;
    s.dims = {dim};
    s.elems = std::move(elems);
    return s;
  }
  void pin_inputs(int i, const std::string& reason) {
    for (size_t k = 0; k < node(i).inputs.size(); ++k) pin(input(i, k), reason);
  }
  void set(int i, Space s, size_t slot = 0) {
    auto& outs = spaces_[static_cast<size_t>(i)];
    if (slot >= outs.size()) outs.resize(slot + 1);
    // Never let an inconsistent space through: its size must match the output shape.
    const Shape shape = out_shape(i, slot);
    if (s.tracked && (shape.empty() || s.dims.empty() || !std::is_sorted(s.dims.begin(), s.dims.end()) ||
                      s.dims.front() < 0 || prod_of(shape, s.dims) != static_cast<int64_t>(s.elems.size()))) {
      pin(s, why(i, "output shape does not match the traced channels"));
      s = Space{};
    }
    outs[slot] = std::move(s);
  }

  // ---- rules
  void visit(int i) {
    const auto& n = node(i);
    switch (n.kind) {
      case OpKind::Parameter: return;
      case OpKind::Conv: return conv(i);
      case OpKind::MatMul: return matmul(i);
      case OpKind::Norm: return norm(i);
      case OpKind::Pool: return pool(i);
      case OpKind::Elementwise: return elementwise(i);
      case OpKind::Shape: return shape_op(i);
      case OpKind::Embedding: return embedding(i);
      case OpKind::Other:
        pin_inputs(i, why(i, "op not understood by the tracer; channels through it are left alone"));
        return;
    }
  }

  void conv(int i) {
    const auto& n = node(i);
    const std::string w = param_of(i, 1);
    const std::string b = n.inputs.size() > 2 ? param_of(i, 2) : std::string{};
    const Space x = input(i, 0);
    const Shape ws = in_shape(i, 1);
    if (w.empty() || ws.size() < 3) {
      pin(x, why(i, "weight is not a named parameter"));
      return;
    }
    const bool transposed = n.attr("transposed") != 0;
    const int64_t groups = n.attr("groups", 1);
    const int64_t cin = transposed ? ws[0] : ws[1] * groups;
    const int64_t cout = transposed ? ws[1] * groups : ws[0];
    const bool x_ok = x.at(1) && static_cast<int64_t>(x.elems.size()) == cin;
    if (groups == 1) {
      dense(i, x, x_ok, w, transposed ? 0 : 1, b, cin, cout);
    } else if (groups == cin && cin == cout && x_ok) {
      // Depthwise: channel c in is channel c out.
      member(w, 0, x.elems);
      member(b, 0, x.elems);
      set(i, single(1, x.elems));
    } else if (!transposed && cin == cout && cin % groups == 0 && x_ok) {
      // Grouped conv with as many outputs as inputs (ResNeXt, RegNet): output channel c reads the
      // inputs of its own group, so channel c in is channel c out, and every group must lose the
      // same local indices. Channels with the same index within their group are one unit.
      const int64_t width = cin / groups;
      for (int64_t k = 1; k < groups; ++k) {
        for (int64_t j = 0; j < width; ++j) unite(x.elems[static_cast<size_t>(j)], x.elems[static_cast<size_t>(k * width + j)]);
      }
      member(w, 0, x.elems);
      member(w, 1, std::vector<int64_t>(x.elems.begin(), x.elems.begin() + width));
      member(b, 0, x.elems);
      set(i, single(1, x.elems));
    } else {
      const std::string reason = why(i, "grouped conv (groups=" + std::to_string(groups) +
                                            ", in " + std::to_string(cin) + ", out " + std::to_string(cout) +
                                            ") whose groups cannot be cut evenly");
      pin(x, reason);
      auto in = fresh(ws[1]);
      auto out = fresh(cout);
      pin(in, reason);
      pin(out, reason);
      member(w, 1, in);
      member(w, 0, out);
      member(b, 0, out);
      set(i, single(1, out));
    }
  }

  // A layer whose weight maps `n_in` input channels (weight dim `in_dim`) to `n_out` fresh output
  // channels (the other of dims 0 and 1), with an optional bias along the outputs. Inputs the
  // tracer cannot follow get pinned elements of their own.
  void dense(int i, const Space& x, bool x_ok, const std::string& w, int64_t in_dim, const std::string& bias,
             int64_t n_in, int64_t n_out) {
    auto in = x_ok ? x.elems : fresh(n_in);
    if (!x_ok) {
      pin(in, why(i, "inputs come from the model input or an untracked op"));
      pin(x, why(i, "input layout not understood"));
    }
    auto out = fresh(n_out);
    member(w, in_dim, in);
    member(w, 1 - in_dim, out);
    member(bias, 0, out);
    set(i, single(1, out));
  }

  // ---- element maps: a space laid out over a shape (channel dims full, the others 1), holding
  // element ids. Used where channels move between several dims (heads, batch-head merges).
  torch::Tensor emap(const Space& s, const Shape& shape) const {
    std::vector<int64_t> sizes(shape.size(), 1);
    for (auto d : s.dims) sizes[static_cast<size_t>(d)] = shape[static_cast<size_t>(d)];
    return torch::tensor(s.elems, torch::kLong).view(sizes);
  }
  // The space of a map over a full shape: the dims along which ids vary are the channel dims,
  // and the ids must not vary along any other. Untracked when that does not hold.
  static Space from_map(const torch::Tensor& full) {
    Space s;
    torch::Tensor base = full;
    std::vector<int64_t> dims;
    for (int64_t j = 0; j < full.dim(); ++j) {
      if (full.size(j) > 1 && !full.eq(full.narrow(j, 0, 1)).all().item<bool>()) {
        dims.push_back(j);
      } else {
        base = base.narrow(j, 0, 1);
      }
    }
    if (dims.empty() || !full.eq(base).all().item<bool>()) return s;
    const auto flat = base.contiguous().flatten();
    s.tracked = true;
    s.dims = std::move(dims);
    s.elems.assign(flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel());
    return s;
  }
  void unite_maps(const torch::Tensor& a, const torch::Tensor& b) {
    auto both = torch::broadcast_tensors({a, b});
    const auto x = both[0].contiguous(), y = both[1].contiguous();
    const int64_t* px = x.data_ptr<int64_t>();
    const int64_t* py = y.data_ptr<int64_t>();
    for (int64_t k = 0; k < x.numel(); ++k) unite(px[k], py[k]);
  }
  // Makes every id along `dim` one unit (per position of the other dims); returns the map narrowed to
  // one entry along it.
  torch::Tensor collapse(const torch::Tensor& m, int64_t dim) {
    if (m.size(dim) > 1) unite_maps(m, m.narrow(dim, 0, 1));
    return m.narrow(dim, 0, 1);
  }

  void matmul(int i) {
    const auto& n = node(i);
    const bool with_bias = n.op == "Addmm";
    if (n.op == "Addmm" || n.op == "Mm") {
      const size_t lhs = with_bias ? 1 : 0, rhs = lhs + 1;
      bool t = false;
      const std::string w = param_of(i, rhs, &t);
      const Shape ws = in_shape(i, rhs);
      const Space x = input(i, lhs);
      if (!w.empty() && ws.size() == 2) {
        const int64_t k = ws[0], nout = ws[1];
        const bool x_ok = x.at(1) && static_cast<int64_t>(x.elems.size()) == k;
        dense(i, x, x_ok, w, t ? 1 : 0, with_bias ? param_of(i, 0) : std::string{}, k, nout);
        return;
      }
      if (n.op == "Mm") {
        // Two activations: a batched product with a batch of one.
        Space a = input(i, 0), b = input(i, 1);
        Shape as = in_shape(i, 0), bs = in_shape(i, 1), os = out_shape(i);
        if (as.size() == 2 && bs.size() == 2 && os.size() == 2) {
          a.shift(1);
          b.shift(1);
          as.insert(as.begin(), 1);
          bs.insert(bs.begin(), 1);
          os.insert(os.begin(), 1);
          Space out;
          if (!batched_product(i, a, as, b, bs, os, &out)) return;
          if (out.tracked) {
            if (out.has(0)) return pin_inputs(i, why(i, "matrix product of this form is not understood"));
            out.shift(-1);
            set(i, out);
          }
          return;
        }
      }
      pin_inputs(i, why(i, "matrix product of this form is not understood"));
      return;
    }
    if (n.op == "Bmm") {
      Space out;
      if (batched_product(i, input(i, 0), in_shape(i, 0), input(i, 1), in_shape(i, 1), out_shape(i), &out) && out.tracked) {
        set(i, out);
      }
      return;
    }
    pin_inputs(i, why(i, "matrix product of this form is not understood"));
  }

  // [B, M, K] x [B, K, N] -> [B, M, N] with channels in any of B, M (lhs), K (both), N (rhs). A
  // contracted channel pairs the two operands' elements. Where channels sit in the batch (heads
  // merged into it), every channel contracted or carried within one batch entry joins that entry's
  // unit: the output has one value per head, so a head goes whole. Returns false after pinning.
  bool batched_product(int i, const Space& a, const Shape& as, const Space& b, const Shape& bs, const Shape& os,
                       Space* out) {
    if (!a.tracked && !b.tracked) return true;
    auto fail = [&](const std::string& what) {
      pin_inputs(i, why(i, what));
      return false;
    };
    if (as.size() != 3 || bs.size() != 3 || os.size() != 3) return fail("matrix product of operands of unknown shape");
    if ((a.has(1) && a.has(2)) || (b.has(1) && b.has(2))) return fail("channels on both dims of one operand");
    if (a.has(1) && b.has(2)) return fail("an outer product of two channel dimensions");
    if (a.tracked && b.tracked && a.has(2) != b.has(1)) return fail("contracts channels with a dim that has none");
    if (a.tracked && b.tracked) attention_ = true;
    if ((a.has(2) && !b.tracked) || (b.has(1) && !a.tracked)) {
      return fail("contracts channels with an operand that has no traced channels");
    }
    torch::Tensor am = a.tracked ? emap(a, as) : torch::Tensor();
    torch::Tensor bm = b.tracked ? emap(b, bs) : torch::Tensor();
    if (a.has(2) && b.has(1)) unite_maps(am.select(1, 0), bm.select(2, 0));
    // What each operand carries into the output, narrowed over K.
    torch::Tensor ao, bo;
    if (am.defined()) {
      if (!a.has(2)) ao = am;
      else if (a.has(0)) ao = collapse(am, 2);
    }
    if (bm.defined()) {
      if (!b.has(1)) bo = bm;
      else if (b.has(0)) bo = collapse(bm, 1);
    }
    if (ao.defined() && bo.defined()) {
      // Both bring the batch channels: one entry's lhs and rhs channels are one unit.
      if (!a.has(0) || !b.has(0) || a.has(1)) return fail("channels of both operands outside a shared batch");
      unite_maps(ao, collapse(bo, 2));
    }
    const torch::Tensor& src = bo.defined() && (b.has(2) || !ao.defined()) ? bo : ao;
    if (!src.defined()) return true;
    *out = from_map(src.expand(os));
    if (!out->tracked) return fail("channels of the product could not be followed");
    return true;
  }

  void norm(int i) {
    const auto& n = node(i);
    const Space x = input(i, 0);
    const Shape xs = in_shape(i, 0).empty() ? out_shape(i) : in_shape(i, 0);
    const std::string w = n.inputs.size() > 1 ? param_of(i, 1) : std::string{};
    const std::string b = n.inputs.size() > 2 ? param_of(i, 2) : std::string{};
    int64_t dim = -1;
    if (n.op == "NativeBatchNorm" || n.op == "CudnnBatchNorm" || n.op == "MiopenBatchNorm") dim = 1;
    if (n.op == "NativeLayerNorm") dim = static_cast<int64_t>(xs.size()) - 1;
    if (n.op == "NativeGroupNorm") dim = 1;
    if (dim < 0 || !x.at(dim)) {
      pin(x, why(i, "normalised dimension is not the traced channel dimension"));
      return;
    }
    if (n.op == "NativeGroupNorm") {
      // Every group must keep the same width: channels with the same index inside their group
      // are one unit, like a grouped conv's.
      const int64_t groups = n.attr("groups", 1);
      const auto c = static_cast<int64_t>(x.elems.size());
      if (groups < 1 || c % groups != 0) return pin(x, why(i, "group norm with uneven groups"));
      const int64_t width = c / groups;
      for (int64_t k = width; k < c; ++k) unite(x.elems[static_cast<size_t>(k)], x.elems[static_cast<size_t>(k % width)]);
    }
    member(w, 0, x.elems);
    member(b, 0, x.elems);
    if (!w.empty()) companion_buffers(w, x.elems);
    if (n.op == "NativeLayerNorm") layer_normed_.insert(layer_normed_.end(), x.elems.begin(), x.elems.end());
    set(i, x);
  }

  void pool(int i) {
    const auto& n = node(i);
    const Space x = input(i, 0);
    if (!x.tracked) return;
    if (n.op == "Mean") {
      const Shape in = in_shape(i, 0);
      std::vector<int64_t> dims = n.attrs.count("dim") ? n.attrs.at("dim") : std::vector<int64_t>{};
      if (dims.empty() || in.empty()) return pin(x, why(i, "mean over every dimension mixes channels"));
      for (auto& d : dims) {
        if (d < 0) d += static_cast<int64_t>(in.size());
        if (x.has(d)) return pin(x, why(i, "mean over the channel dimension"));
      }
      Space s = x;
      if (!n.attr("keepdim")) {
        for (auto& c : s.dims) c -= std::count_if(dims.begin(), dims.end(), [c](int64_t d) { return d < c; });
      }
      return set(i, s);
    }
    // Spatial pooling keeps [N, C, ...] channels in place.
    if (x.at(1)) return set(i, x);
    pin(x, why(i, "pooling over the channel dimension"));
  }

  void elementwise(int i) {
    const auto& n = node(i);
    const Shape out = out_shape(i);
    const int64_t rank = static_cast<int64_t>(out.size());
    Space result;
    bool ok = true;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Space s = input(i, k);
      const Shape in = in_shape(i, k);
      const int64_t shift = rank - static_cast<int64_t>(in.size());  // broadcasting aligns from the right
      if (s.tracked) {
        if (in.empty()) { ok = false; break; }
        Space aligned = s;
        aligned.shift(shift);
        if (!result.tracked) {
          result = aligned;
        } else if (result.dims == aligned.dims && result.elems.size() == aligned.elems.size()) {
          unite(result.elems, aligned.elems);
        } else {
          ok = false;
          break;
        }
      }
    }
    if (!ok) return pin_inputs(i, why(i, "inputs carry channels in different layouts"));
    if (!result.tracked) return;
    // Other operands: a parameter along the channels (a PReLU slope, a layer scale) is cut with
    // them; anything else must broadcast over them or be pinned.
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (input(i, k).tracked) continue;
      const Shape in = in_shape(i, k);
      const int64_t shift = rank - static_cast<int64_t>(in.size());
      if (n.inputs[k] < 0 && in.empty()) {
        // A tensor that needs no grad and whose shape autograd did not keep: it cannot be shown
        // to broadcast over the channels. Leave them alone rather than guess.
        pin(result, why(i, "an operand that needs no grad may not broadcast over the channels"));
        return;
      }
      bool along = false;
      for (int64_t d : result.dims) {
        const int64_t local = d - shift;
        if (local >= 0 && local < static_cast<int64_t>(in.size()) && in[static_cast<size_t>(local)] != 1) along = true;
      }
      const std::string p = param_of(i, k);
      // PReLU's slope applies along dim 1, not right-aligned like broadcasting.
      if (n.op == "Prelu" && !p.empty() && in.size() == 1 && in[0] > 1) {
        if (result.at(1) && in[0] == static_cast<int64_t>(result.elems.size())) {
          member(p, 0, result.elems);
          continue;
        }
        pin(result, why(i, "PReLU slope does not run along the channels"));
        return;
      }
      if (!along) continue;
      if (!p.empty() && result.single() && result.dims[0] - shift >= 0) {
        member(p, result.dims[0] - shift, result.elems);
        continue;
      }
      pin(result, why(i, "an operand without traced channels does not broadcast over them"));
      return;
    }
    if (!result.tracked) return;
    set(i, result);
  }

  void embedding(int i) {
    const std::string w = param_of(i, 0);
    const Shape ws = in_shape(i, 0);
    const Shape out = out_shape(i);
    if (w.empty() || ws.size() != 2 || out.empty()) return;
    auto elems = fresh(ws[1]);
    member(w, 1, elems);
    set(i, single(static_cast<int64_t>(out.size()) - 1, elems));
  }

  void shape_op(int i) {
    const auto& n = node(i);
    const std::string& op = n.op;
    if (op == "Cat") return cat(i);
    if (op == "Split" || op == "SplitWithSizes" || op == "Unbind") return split(i);
    const Space x = input(i, 0);
    if (!x.tracked) return;
    const Shape in = in_shape(i, 0).empty() ? Shape{} : in_shape(i, 0);
    const Shape out = out_shape(i);
    if (op == "Permute" || op == "Transpose" || op == "T") {
      std::vector<int64_t> perm(out.size());
      std::iota(perm.begin(), perm.end(), 0);
      if (op == "Permute") perm = n.attrs.count("dims") ? n.attrs.at("dims") : perm;
      if (op == "Transpose" || op == "T") {
        auto dims = n.attrs.count("dims") ? n.attrs.at("dims") : std::vector<int64_t>{0, 1};
        for (auto& d : dims) d = d < 0 ? d + static_cast<int64_t>(out.size()) : d;
        if (dims.size() == 2) std::swap(perm[static_cast<size_t>(dims[0])], perm[static_cast<size_t>(dims[1])]);
      }
      for (auto& p : perm) p = p < 0 ? p + static_cast<int64_t>(out.size()) : p;
      // Where each channel dim lands. Channel dims may end up apart (heads: [B, T, H, D] ->
      // [B, H, T, D]); if they change order among themselves, the flattened channels are permuted.
      std::vector<int64_t> pos(x.dims.size(), -1);
      for (size_t j = 0; j < perm.size(); ++j) {
        for (size_t k = 0; k < x.dims.size(); ++k) {
          if (perm[j] == x.dims[k]) pos[k] = static_cast<int64_t>(j);
        }
      }
      if (std::count(pos.begin(), pos.end(), -1) > 0) return pin(x, why(i, "a permute of unknown rank"));
      Space s = x;
      s.dims = pos;
      std::sort(s.dims.begin(), s.dims.end());
      if (!std::is_sorted(pos.begin(), pos.end())) {
        if (in.size() <= static_cast<size_t>(x.dims.back())) return pin(x, why(i, "input shape unknown"));
        std::vector<int64_t> sizes, order;
        for (auto d : x.dims) sizes.push_back(in[static_cast<size_t>(d)]);
        for (auto d : s.dims) order.push_back(std::find(pos.begin(), pos.end(), d) - pos.begin());
        const auto idx = torch::arange(static_cast<int64_t>(x.elems.size()), torch::kLong)
                             .reshape(sizes)
                             .permute(order)
                             .flatten()
                             .contiguous();
        const int64_t* p = idx.data_ptr<int64_t>();
        for (size_t k = 0; k < s.elems.size(); ++k) s.elems[k] = x.elems[static_cast<size_t>(p[k])];
        // The model re-splits the channels after a cut (view(n, groups, c / groups)); that only
        // lands each kept channel where the next layer expects it if every outer slice loses the
        // same inner indices. So channels with the same innermost index are one unit.
        const int64_t inner = sizes.back();
        for (size_t k = 0; k < x.elems.size(); ++k) unite(x.elems[k], x.elems[k % static_cast<size_t>(inner)]);
      }
      return set(i, s);
    }
    if (op == "Slice" || op == "Select") {
      int64_t d = n.attr("dim");
      if (d < 0) d += static_cast<int64_t>(in.size());
      if (!x.has(d)) {
        Space s = x;
        if (op == "Select") {
          for (auto& c : s.dims) c -= c > d ? 1 : 0;
        }
        return set(i, s);
      }
      if (in.size() <= static_cast<size_t>(x.dims.back())) return pin(x, why(i, "input shape unknown"));
      const int64_t size = in[static_cast<size_t>(d)];
      if (op == "Select") {
        // Picking one entry of one channel dim among several (q, k, v = qkv[0], qkv[1], qkv[2]).
        if (x.single()) return pin(x, why(i, "select picks single channels"));
        int64_t index = n.attr("index");
        if (index < 0) index += size;
        return restrict(i, x, emap(x, in).select(d, index));
      }
      int64_t start = std::clamp<int64_t>(n.attr("start", 0) < 0 ? n.attr("start", 0) + size : n.attr("start", 0), 0, size);
      int64_t end = n.has_attr("end") ? n.attr("end") : size;
      end = std::clamp<int64_t>(end < 0 ? end + size : end, 0, size);
      const int64_t step = std::max<int64_t>(1, n.attr("step", 1));
      // The channels sliced away stay in the producer but are read by nobody here.
      if (!x.single()) return restrict(i, x, emap(x, in).slice(d, start, end, step));
      Space s = x;
      s.elems.clear();
      for (int64_t j = start; j < end; j += step) s.elems.push_back(x.elems[static_cast<size_t>(j)]);
      return set(i, s);
    }
    if (op == "Expand") {
      Space s = x;
      s.shift(static_cast<int64_t>(out.size()) - static_cast<int64_t>(in.size()));
      return set(i, s);
    }
    if (in == out && (op == "Clone" || op == "Contiguous" || op == "ToCopy" || op == "AsStrided" ||
                      op == "View" || op == "ReshapeAlias" || op == "UnsafeView")) {
      return set(i, x);
    }
    if (op == "View" || op == "ReshapeAlias" || op == "UnsafeView" || op == "Unsqueeze" || op == "Squeeze" ||
        op == "Flatten" || op == "AsStrided") {
      return view(i, x, in, out);
    }
    pin(x, why(i, "shape op not understood"));
  }

  // The output (slot) whose channels are the part of `x` left in `picked` (an element map over
  // the input shape, with the picked dim gone or narrowed).
  void restrict(int i, const Space& x, const torch::Tensor& picked, size_t slot = 0) {
    const Shape out = out_shape(i, slot);
    if (out.size() != static_cast<size_t>(picked.dim())) return pin(x, why(i, "output shape unknown"));
    Space s = from_map(picked.expand(out));
    if (!s.tracked) return pin(x, why(i, "picks channels in a way the tracer does not follow"));
    set(i, s, slot);
  }

  // A row-major reshape. Fast path: the channel range either maps onto output dims whole, or is
  // merged with the dims after it (a flatten), so each channel owns a contiguous block of
  // features. Otherwise (heads split off and merged into the batch, and back) the element map is
  // reshaped and read again.
  void view(int i, const Space& x, const Shape& in, const Shape& out) {
    if (in.empty()) return pin(x, why(i, "input shape unknown"));
    if (x.contiguous()) {
      const auto begin = static_cast<size_t>(x.dims.front()), end = static_cast<size_t>(x.dims.back() + 1);
      const int64_t pre = prod(in, 0, begin);
      const int64_t len = prod(in, begin, end);
      const int64_t post = prod(in, end, in.size());
      size_t b = 0;
      while (b <= out.size() && prod(out, 0, b) != pre) ++b;
      while (b < out.size() && out[b] == 1 && pre == prod(out, 0, b + 1) && len != 1) ++b;
      for (size_t e = b + 1; b <= out.size() && e <= out.size(); ++e) {
        const int64_t p = prod(out, b, e);
        Space s;
        s.tracked = true;
        for (size_t d = b; d < e; ++d) s.dims.push_back(static_cast<int64_t>(d));
        if (p == len) {
          s.elems = x.elems;
          return set(i, s);
        }
        if (p > len && p % len == 0 && post % (p / len) == 0) {
          const int64_t k = p / len;
          s.elems.reserve(static_cast<size_t>(p));
          for (int64_t f = 0; f < p; ++f) s.elems.push_back(x.elems[static_cast<size_t>(f / k)]);
          return set(i, s);
        }
        if (p > len) break;
      }
    }
    if (prod(in, 0, in.size()) != prod(out, 0, out.size())) return pin(x, why(i, "input shape unknown"));
    Space s = from_map(emap(x, in).expand(in).reshape(out));
    if (!s.tracked) return pin(x, why(i, "a reshape mixes channels with other dims in a way the tracer does not follow"));
    set(i, s);
  }

  void cat(int i) {
    const auto& n = node(i);
    const Shape out = out_shape(i);
    int64_t d = n.attr("dim");
    if (d < 0) d += static_cast<int64_t>(out.size());
    const auto sizes = n.attrs.count("sizes") ? n.attrs.at("sizes") : std::vector<int64_t>{};
    Space first;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (input(i, k).tracked) {
        first = input(i, k);
        break;
      }
    }
    if (!first.tracked) return;
    if (first.at(d)) {
      Space s = first;
      s.elems.clear();
      for (size_t k = 0; k < n.inputs.size(); ++k) {
        const Space x = input(i, k);
        if (x.at(d)) {
          s.elems.insert(s.elems.end(), x.elems.begin(), x.elems.end());
        } else {
          const int64_t size = k < sizes.size() ? sizes[k] : (in_shape(i, k).empty() ? -1 : in_shape(i, k)[static_cast<size_t>(d)]);
          if (size < 0) return pin_inputs(i, why(i, "concat of an input whose size is unknown"));
          auto filler = fresh(size);
          pin(filler, why(i, "concatenated with a tensor that has no traced channels"));
          s.elems.insert(s.elems.end(), filler.begin(), filler.end());
        }
      }
      return set(i, s);
    }
    if (first.has(d)) return pin_inputs(i, why(i, "concat inside a multi-dim channel range"));
    // Concat along another dim (tokens, batch): the inputs' channels are the same channels.
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const Space x = input(i, k);
      if (!x.tracked) {
        if (!param_of(i, k).empty() && first.single()) {
          member(param_of(i, k), first.dims[0], first.elems);
          continue;
        }
        return pin(first, why(i, "concatenated with a tensor that has no traced channels"));
      }
      if (x.dims != first.dims) return pin_inputs(i, why(i, "concat of different layouts"));
      unite(first.elems, x.elems);
    }
    set(i, first);
  }

  void split(int i) {
    const auto& n = node(i);
    const Space x = input(i, 0);
    if (!x.tracked) return;
    const Shape in = in_shape(i, 0);
    int64_t d = n.attr("dim");
    if (d < 0) d += static_cast<int64_t>(in.size());
    const size_t outputs = n.output_shapes.size();
    if (!x.has(d)) {
      Space s = x;
      if (n.op == "Unbind") {
        for (auto& c : s.dims) c -= c > d ? 1 : 0;
      }
      for (size_t o = 0; o < outputs; ++o) set(i, s, o);
      return;
    }
    if (n.op == "Unbind" && !x.single() && in.size() > static_cast<size_t>(x.dims.back())) {
      // q, k, v = qkv.unbind(0): each output keeps the channels of its entry.
      const auto m = emap(x, in);
      for (size_t o = 0; o < outputs; ++o) restrict(i, x, m.select(d, static_cast<int64_t>(o)), o);
      return;
    }
    if (n.op == "Unbind" || !x.single()) return pin(x, why(i, "split across channel dimensions"));
    // chunk(k) / split(size): the model derives the cut points from the current size, so after a
    // cut every piece must still be equally large. Pairing channel j of every piece keeps that.
    if (n.op == "Split" && outputs > 1) {
      const int64_t piece = n.attr("split_size");
      if (piece > 0 && piece * static_cast<int64_t>(outputs) == static_cast<int64_t>(x.elems.size())) {
        for (size_t o = 1; o < outputs; ++o) {
          for (int64_t j = 0; j < piece; ++j) {
            unite(x.elems[static_cast<size_t>(j)], x.elems[o * static_cast<size_t>(piece) + static_cast<size_t>(j)]);
          }
        }
      }
    }
    int64_t offset = 0;
    for (size_t o = 0; o < outputs; ++o) {
      const Shape os = out_shape(i, o);
      const int64_t size = os.size() > static_cast<size_t>(d) ? os[static_cast<size_t>(d)] : 0;
      Space s = x;
      s.elems.assign(x.elems.begin() + offset, x.elems.begin() + std::min<int64_t>(offset + size, static_cast<int64_t>(x.elems.size())));
      offset += size;
      set(i, s, o);
    }
  }

  // ---- groups
  std::vector<Group> groups() {
    // root -> (member id, index) pairs
    std::vector<Member> member_list;
    std::unordered_map<int64_t, std::vector<std::pair<size_t, int64_t>>> by_root;
    for (const auto& [m, elems] : members_) {
      const size_t id = member_list.size();
      member_list.push_back(m);
      for (size_t j = 0; j < elems.size(); ++j) by_root[find(elems[j])].emplace_back(id, static_cast<int64_t>(j));
    }
    std::map<int64_t, std::string> root_reason;
    for (const auto& [e, reason] : reasons_) root_reason.emplace(find(e), reason);
    std::set<int64_t> hidden_roots;
    if (attention_) {
      for (auto e : layer_normed_) hidden_roots.insert(find(e));
    }

    // Units with the same members (and pinned state) form one group.
    std::map<std::pair<std::vector<size_t>, std::string>, std::vector<int64_t>> by_signature;
    std::vector<int64_t> roots;
    for (const auto& kv : by_root) roots.push_back(kv.first);
    std::sort(roots.begin(), roots.end());
    for (int64_t r : roots) {
      std::vector<size_t> sig;
      for (const auto& [id, idx] : by_root[r]) sig.push_back(id);
      std::sort(sig.begin(), sig.end());
      sig.erase(std::unique(sig.begin(), sig.end()), sig.end());
      auto it = root_reason.find(r);
      by_signature[{sig, it == root_reason.end() ? std::string{} : it->second}].push_back(r);
    }
    std::vector<Group> out;
    for (const auto& [key, unit_roots] : by_signature) {
      Group g;
      for (size_t id : key.first) g.members.push_back(member_list[id]);
      g.pinned = !key.second.empty();
      g.reason = key.second;
      for (int64_t r : unit_roots) {
        if (hidden_roots.count(r)) g.hidden = true;
        std::vector<std::vector<int64_t>> idx(g.members.size());
        for (const auto& [id, j] : by_root[r]) {
          const auto pos = static_cast<size_t>(std::find(key.first.begin(), key.first.end(), id) - key.first.begin());
          idx[pos].push_back(j);
        }
        g.indices.push_back(std::move(idx));
      }
      // Units in the order of their first index in the first member.
      std::sort(g.indices.begin(), g.indices.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
      const bool one_unit = g.indices.size() == 1 &&
                            std::any_of(g.indices[0].begin(), g.indices[0].end(), [](const auto& idx) { return idx.size() > 1; });
      if (!g.pinned && one_unit) {
        // Removing the only unit would remove the whole layer; nothing smaller can go.
        g.pinned = true;
        g.reason = "coupling ties all its channels into one unit (through shuffles, equal splits or groups), so none "
                   "can be removed on its own";
      }
      out.push_back(std::move(g));
    }
    std::sort(out.begin(), out.end(), [](const Group& a, const Group& b) { return a.name() < b.name(); });
    return out;
  }
};

}  // namespace

std::string Group::name() const {
  for (const auto& m : members) {
    if (m.dim == 0 && m.tensor.size() > 7 && m.tensor.compare(m.tensor.size() - 7, 7, ".weight") == 0) return m.tensor;
  }
  return members.empty() ? std::string{} : members.front().tensor + "@dim" + std::to_string(members.front().dim);
}

DependencyGraph::DependencyGraph(const Trace& trace, const NamedTensors& buffers)
    : groups_(Builder(trace, buffers).run()) {}

void DependencyGraph::pin(size_t group, const std::string& reason) {
  auto& g = groups_.at(group);
  if (g.pinned) return;
  g.pinned = true;
  g.reason = reason;
}

std::string DependencyGraph::explain() const {
  std::ostringstream s;
  size_t pinned = 0;
  for (const auto& g : groups_) pinned += g.pinned ? 1 : 0;
  s << groups_.size() << " groups, " << pinned << " pinned\n";
  for (size_t i = 0; i < groups_.size(); ++i) {
    const auto& g = groups_[i];
    s << "group " << i << " (" << g.name() << "): " << g.size() << " channels"
      << (g.pinned ? ", PINNED: " + g.reason : std::string{}) << "\n";
    for (const auto& m : g.members) s << "    " << m.tensor << " dim " << m.dim << "\n";
  }
  return s.str();
}

}  // namespace libprune::graph
