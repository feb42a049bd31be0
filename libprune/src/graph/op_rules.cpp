// The op table, and the helpers every rule shares.
#include "libprune/graph/op_rules.h"

#include "rules/rules.h"

#include "libprune/options.h"

#include <algorithm>
#include <map>
#include <mutex>

namespace libprune::graph {

bool Space::single() const { return tracked && dims.size() == 1; }
bool Space::at(int64_t d) const { return single() && dims[0] == d; }
bool Space::has(int64_t d) const { return tracked && std::find(dims.begin(), dims.end(), d) != dims.end(); }
bool Space::contiguous() const {
  return tracked && !dims.empty() && dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size());
}
void Space::shift(int64_t by) {
  for (auto& d : dims) d += by;
}
Space Space::along(int64_t dim, std::vector<int64_t> elems) {
  Space s;
  s.tracked = true;
  s.dims = {dim};
  s.elems = std::move(elems);
  return s;
}

Shape RuleContext::in_shape(int i, size_t k) const {
  const auto& n = node(i);
  return k < n.input_shapes.size() ? n.input_shapes[k] : Shape{};
}

Shape RuleContext::out_shape(int i, size_t slot) const {
  const auto& n = node(i);
  return slot < n.output_shapes.size() ? n.output_shapes[slot] : Shape{};
}

std::string RuleContext::parameter(int i, size_t k, bool* transposed) const {
  const auto& n = node(i);
  if (k >= n.inputs.size() || n.inputs[k] < 0) return {};
  return trace().parameter_source(n.inputs[k], transposed);
}

void RuleContext::unite(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) unite(a[i], b[i]);
}

void RuleContext::pin(const Space& s, const std::string& reason) {
  if (s.tracked) pin(s.elems, reason);
}

void RuleContext::pin_inputs(int i, const std::string& reason) {
  for (size_t k = 0; k < node(i).inputs.size(); ++k) pin(input(i, k), reason);
}

torch::Tensor RuleContext::element_map(const Space& s, const Shape& shape) {
  std::vector<int64_t> sizes(shape.size(), 1);
  for (auto d : s.dims) sizes[static_cast<size_t>(d)] = shape[static_cast<size_t>(d)];
  return torch::tensor(s.elems, torch::kLong).view(sizes);
}

Space RuleContext::from_map(const torch::Tensor& full) {
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

void RuleContext::unite_maps(const torch::Tensor& a, const torch::Tensor& b) {
  auto both = torch::broadcast_tensors({a, b});
  const auto x = both[0].contiguous(), y = both[1].contiguous();
  const int64_t* px = x.data_ptr<int64_t>();
  const int64_t* py = y.data_ptr<int64_t>();
  for (int64_t k = 0; k < x.numel(); ++k) unite(px[k], py[k]);
}

torch::Tensor RuleContext::collapse(const torch::Tensor& map, int64_t dim) {
  if (map.size(dim) > 1) unite_maps(map, map.narrow(dim, 0, 1));
  return map.narrow(dim, 0, 1);
}

void RuleContext::restrict(int i, const Space& x, const torch::Tensor& picked, size_t slot) {
  const Shape out = out_shape(i, slot);
  if (out.size() != static_cast<size_t>(picked.dim())) return pin(x, why(i, "output shape unknown"));
  Space s = from_map(picked.expand(out));
  if (!s.tracked) return pin(x, why(i, "picks channels in a way the tracer does not follow"));
  set(i, s, slot);
}

namespace {

struct Entry {
  OpKind kind = OpKind::Other;
  OpRule rule;
  std::string origin;  // the op this entry was registered for (an alias keeps its original's)
};

struct Table {
  std::mutex mutex;
  std::map<std::string, Entry> entries;
  Table() {
    const rules::Add add = [this](const std::string& op, OpKind kind, const OpRule& rule) { entries[op] = {kind, rule, op}; };
    entries["AccumulateGrad"] = {OpKind::Parameter, [](RuleContext&, int) {}, "AccumulateGrad"};
    rules::add_conv_linear(add);
    rules::add_matmul_attention(add);
    rules::add_norm_pool(add);
    rules::add_elementwise(add);
    rules::add_view_permute(add);
    rules::add_concat_split(add);
  }
};

Table& table() {
  static Table t;
  return t;
}

}  // namespace

void register_op_rule(const std::string& op, OpKind kind, OpRule rule) {
  TORCH_CHECK_VALUE(!op.empty() && rule, "register_op_rule: the op name is empty or the rule is null. Fix: pass the "
                    "autograd node's name without \"Backward0\" (e.g. \"MyGelu\" for MyGeluBackward0) and a rule");
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.entries[op] = {kind, std::move(rule), op};
}

void register_op_alias(const std::string& op, const std::string& like) {
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto it = t.entries.find(like);
  if (it == t.entries.end()) {
    std::vector<std::string> known;
    for (const auto& [name, e] : t.entries) known.push_back(name);
    TORCH_CHECK_VALUE(false, "register_op_alias: \"", like, "\" has no rule, so \"", op,
                      "\" cannot behave like it. Fix: name an op with a rule: ", options::join(known));
  }
  TORCH_CHECK_VALUE(!op.empty(), "register_op_alias: the op name is empty. Fix: pass the autograd node's name without "
                    "\"Backward0\" (a Python autograd.Function MyGelu traces as \"MyGelu\")");
  t.entries[op] = it->second;
}

std::vector<std::string> ruled_ops() {
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  std::vector<std::string> out;
  for (const auto& [name, e] : t.entries) out.push_back(name);
  return out;
}

namespace detail {

std::string op_origin(const std::string& op) {
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto it = t.entries.find(op);
  return it == t.entries.end() ? op : it->second.origin;
}

OpRule find_op_rule(const std::string& op) {
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto it = t.entries.find(op);
  return it == t.entries.end() ? OpRule{} : it->second.rule;
}

OpKind op_kind(const std::string& op) {
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto it = t.entries.find(op);
  return it == t.entries.end() ? OpKind::Other : it->second.kind;
}

}  // namespace detail

}  // namespace libprune::graph
