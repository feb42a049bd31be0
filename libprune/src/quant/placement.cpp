#include "placement.h"

#include "libprune/nn/batchnorm_fold.h"
#include "libprune/nn/call.h"
#include "libprune/nn/eval_mode.h"

#include <algorithm>
#include <map>
#include <set>

namespace libprune::quant::detail {
namespace {

// ---------------------------------------------------------------------------------------------
// Recording: which layer read which layer's output, in call order.

class RecorderImpl : public nn::ExtensionImpl {
 public:
  RecorderImpl(std::vector<Call>* log, std::string name, ModulePtr module)
      : log_(log), name_(std::move(name)), module_(std::move(module)) {}
  torch::Tensor forward(torch::nn::Module& /*layer*/, const std::vector<torch::Tensor>& inputs,
                        const nn::Forward& next) override {
    auto out = next(inputs);
    log_->push_back({name_, module_.lock(), inputs, out});
    return out;
  }

 private:
  std::vector<Call>* log_;
  std::string name_;
  std::weak_ptr<torch::nn::Module> module_;
};

constexpr const char* kRecorder = "quant_recorder";

// The model's leaf layers by name (extensions excluded: they are not layers).
}  // namespace

std::vector<std::pair<std::string, ModulePtr>> leaf_layers(torch::nn::Module& model) {

  std::vector<std::pair<std::string, ModulePtr>> out;
  for (const auto& item : model.named_modules("", false)) {
    if (dynamic_cast<nn::ExtensionImpl*>(item.value().get())) continue;
    bool leaf = true;
    for (const auto& child : item.value()->children()) {
      if (!dynamic_cast<nn::ExtensionImpl*>(child.get())) leaf = false;
    }
    if (leaf) out.emplace_back(item.key(), item.value());
  }
  return out;
}

namespace {

// Runs `forward` once in eval mode without gradients with a recorder outermost on every leaf layer.
std::vector<Call> record(torch::nn::Module& model, const graph::Forward& forward, std::vector<torch::Tensor>* outputs) {
  std::vector<Call> log;
  std::vector<ModulePtr> installed;
  const auto take_off = [&] {
    for (auto& m : installed) nn::remove(*m, kRecorder);
  };
  try {
    for (auto& [name, layer] : leaf_layers(model)) {
      nn::install(*layer, kRecorder, std::make_shared<RecorderImpl>(&log, name, layer), /*first=*/true);
      installed.push_back(layer);
    }
    nn::EvalModeGuard eval(model);
    torch::NoGradGuard no_grad;
    *outputs = forward();
  } catch (...) {
    take_off();
    throw;
  }
  take_off();
  return log;
}

bool same_tensor(const torch::Tensor& a, const torch::Tensor& b) {
  return a.defined() && b.defined() && a.unsafeGetTensorImpl() == b.unsafeGetTensorImpl();
}

// ---------------------------------------------------------------------------------------------
// Placement: the units an int8 runtime fuses, found in the recording.

// Why a 2-D convolution has no int8 kernel here, or "".
std::string int8_conv_problem(const torch::nn::Conv2dImpl& conv) {
  if (!c10::holds_alternative<torch::ExpandingArray<2>>(conv.options.padding())) {
    return "its padding is 'same' or 'valid'; the int8 kernel takes numbers, so it runs in float";
  }
  if (!c10::get_if<torch::enumtype::kZeros>(&conv.options.padding_mode())) {
    return "it pads by reflection, replication or wrapping; the int8 kernel pads with zeros, so it runs in float";
  }
  if (conv.options.transposed()) return "it is transposed; only direct convolutions convert, so it runs in float";
  return {};
}

bool is_relu(const torch::nn::Module& m) { return dynamic_cast<const torch::nn::ReLUImpl*>(&m) != nullptr; }

// Layers that run on quint8 tensors as they are; `keeps_grid`: their outputs are values of their
// input's grid, so a reader needs no quantiser of its own.
bool passes_int8(const torch::nn::Module& m, bool* keeps_grid) {
  *keeps_grid = true;
  if (is_relu(m) || dynamic_cast<const torch::nn::ReLU6Impl*>(&m) ||
      dynamic_cast<const torch::nn::HardtanhImpl*>(&m) || dynamic_cast<const torch::nn::MaxPool2dImpl*>(&m) ||
      dynamic_cast<const torch::nn::FlattenImpl*>(&m) || dynamic_cast<const torch::nn::DropoutImpl*>(&m) ||
      dynamic_cast<const torch::nn::IdentityImpl*>(&m)) {
    return true;
  }
  *keeps_grid = false;
  return dynamic_cast<const torch::nn::AdaptiveAvgPool2dImpl*>(&m) || dynamic_cast<const torch::nn::AvgPool2dImpl*>(&m);
}

std::string float_reason(const torch::nn::Module& m) {
  if (nn::is_batch_norm(m)) return "a batch norm not right after a 2-D convolution cannot fold into one, so it runs in float";
  if (dynamic_cast<const torch::nn::Conv1dImpl*>(&m) || dynamic_cast<const torch::nn::Conv3dImpl*>(&m)) {
    return "only 2-D convolutions have int8 kernels here, so it runs in float";
  }
  return "no int8 kernel for a " + m.name() + ", so it runs in float (its inputs are dequantised)";
}

}  // namespace

namespace {

// "conv1 + bn1 + relu"
std::string unit_line(const std::vector<Call>& calls, const Unit& u) {
  std::string s = calls[u.layer].name;
  if (u.norm) s += " + " + calls[*u.norm].name;
  if (u.relu) s += " + " + calls[*u.relu].name;
  return s;
}

// Whether the unit stays float: keep_float names one of its layers (added to `named`), or its layer
// carries prepare's mark.
bool kept(const std::vector<Call>& calls, const Unit& u, const Names& keep_float, std::set<std::string>* named) {
  bool keep = nn::extension(*calls[u.layer].module, kKeepFloat) != nullptr;
  for (const auto& k : {std::optional<size_t>(u.layer), u.norm, u.relu}) {
    if (k && std::find(keep_float.begin(), keep_float.end(), calls[*k].name) != keep_float.end()) {
      named->insert(calls[*k].name);
      keep = true;
    }
  }
  return keep;
}

// Lists the convs and linears the recorded pass did not call through libprune::nn::call.
void report_uncalled(torch::nn::Module& model, Placement* p) {
  std::set<std::string> seen;
  for (const auto& c : p->calls) seen.insert(c.name);
  for (const auto& [name, layer] : leaf_layers(model)) {
    const bool kernel = dynamic_cast<torch::nn::Conv2dImpl*>(layer.get()) || dynamic_cast<torch::nn::LinearImpl*>(layer.get());
    if (kernel && !seen.count(name)) {
      p->report.skipped.push_back(name + ": not called through libprune::nn::call on the example, so nothing can act on "
                                         "it; it stays float. Fix: call it as libprune::nn::call(layer, x) in forward");
    }
  }
}

// Every keep_float name found a unit, and some unit is left to quantise.
void check_kept(const Placement& p, const Names& keep_float, const std::set<std::string>& named) {
  for (const auto& name : keep_float) {
    if (named.count(name)) continue;
    std::vector<size_t> layers = p.kept_float;
    for (const auto& u : p.units) layers.push_back(u.layer);
    std::sort(layers.begin(), layers.end());
    std::string some;
    for (size_t k = 0; k < layers.size() && k < 6; ++k) some += (k ? ", " : "") + p.calls[layers[k]].name;
    if (layers.size() > 6) some += ", ...";
    TORCH_CHECK_VALUE(false, "quant: keep_float names '", name, "', which is no layer of a unit that would be ",
                      "quantised (", layers.size(), " units: ", layers.empty() ? "none" : some, "; layers that stay ",
                      "float anyway are not units). Fix: name a unit's conv, linear, add, batch norm or ReLU as ",
                      "prepare's report lists it");
  }
  TORCH_CHECK_VALUE(!p.units.empty() || p.kept_float.empty(), "quant: keep_float keeps all ", p.kept_float.size(),
                    " units float, so nothing would be quantised. Fix: keep fewer (the most sensitive few, from the "
                    "quantization sensitivity scan)");
}

// Whether a later layer reads the unit's output, and whether that output has a grid. A conv or
// linear whose output only code reads (attention's reshapes, a functional GELU) still runs its int8
// kernel, on a grid of its own, and dequantises: left float, the layer would run in float. What the
// model returns (logits, or a view of them), and the output of a unit after which no layer runs
// (logits that code scales or log-softmaxes before returning), stay unrounded: a 256-step grid over
// logits would decide the argmax. An add gains nothing from a grid that code then undoes.
void mark_output(const std::vector<Call>& calls, const std::vector<torch::Tensor>& outputs, Unit* u) {
  const auto& out = calls[u->end].output;
  for (size_t j = u->end + 1; j < calls.size() && !u->read_by_layers; ++j) {
    for (const auto& in : calls[j].inputs) u->read_by_layers = u->read_by_layers || same_tensor(in, out);
  }
  const bool returned = std::any_of(outputs.begin(), outputs.end(), [&](const torch::Tensor& o) {
    return o.defined() && out.defined() && o.storage().is_alias_of(out.storage());
  });
  const bool last = u->end + 1 == calls.size();
  u->rounds_output = u->read_by_layers || (u->kind != Kind::add && !returned && !last);
}

}  // namespace

Placement place(torch::nn::Module& model, const graph::Forward& forward, const Names& keep_float) {
  Placement p;
  std::vector<torch::Tensor> outputs;
  p.calls = record(model, forward, &outputs);
  const auto& calls = p.calls;
  const size_t n = calls.size();
  std::set<const c10::TensorImpl*> points;  // outputs that are int8 values
  const auto is_point = [&](const torch::Tensor& t) { return t.defined() && points.count(t.unsafeGetTensorImpl()); };
  // Call j directly reads call i's output as its first input.
  const auto reads = [&](size_t j, size_t i) {
    return j < n && !calls[j].inputs.empty() && same_tensor(calls[j].inputs[0], calls[i].output);
  };
  const auto line = [&](const Unit& u) { return unit_line(calls, u); };
  std::map<const torch::nn::Module*, int> uses;
  for (const auto& c : calls) ++uses[c.module.get()];
  const auto once = [&](size_t j) { return uses[calls[j].module.get()] == 1; };
  std::set<std::string> named;  // the keep_float names some unit's layer answers to
  std::set<const c10::TensorImpl*> kept_out;  // outputs of units keep_float names (and what passes them on)
  const auto is_kept = [&](const torch::Tensor& t) { return t.defined() && kept_out.count(t.unsafeGetTensorImpl()); };

  for (size_t i = 0; i < n; ++i) {
    const auto& m = *calls[i].module;
    const auto* conv2d = dynamic_cast<const torch::nn::Conv2dImpl*>(&m);
    const std::string conv_problem = conv2d ? int8_conv_problem(*conv2d) : std::string();
    const bool conv = conv2d && conv_problem.empty();
    const bool linear = dynamic_cast<const torch::nn::LinearImpl*>(&m) != nullptr;
    const bool add = dynamic_cast<const nn::AddImpl*>(&m) != nullptr;
    if (conv || linear || add) {
      Unit u;
      u.kind = conv ? Kind::conv : linear ? Kind::linear : Kind::add;
      u.layer = u.end = i;
      // A batch norm or ReLU module called more than once (shared by several units) is not fused: it
      // runs on its own, so no unit's choice (a quantiser, keep_float) decides it for another.
      if (conv && reads(i + 1, i) && nn::tracks_running_stats(*calls[i + 1].module) && once(i + 1)) {
        u.norm = u.end = i + 1;
      }
      if (reads(u.end + 1, u.end) && is_relu(*calls[u.end + 1].module) && once(u.end + 1)) u.relu = u.end = u.end + 1;
      for (const auto& in : calls[i].inputs) u.observe_input.push_back(!is_point(in));
      const bool asked = kept(calls, u, keep_float, &named);
      // An int8 add would round a kept conv's or linear's float output again: it stays float too.
      const bool beside = u.kind == Kind::add && std::any_of(calls[i].inputs.begin(), calls[i].inputs.end(), is_kept);
      if (asked || beside) {
        // (An add's sum makes no later add float: docs/design.md, "Mixed precision".)
        if (asked && u.kind != Kind::add) kept_out.insert(calls[u.end].output.unsafeGetTensorImpl());
        if (asked) p.asked_float.push_back(u.layer);
        p.kept_float.push_back(u.layer);
        for (size_t k = u.layer; k <= u.end; ++k) {
          if (k != u.relu) p.float_calls.push_back(k);  // a ReLU passes float values through as they are
        }
        p.report.skipped.push_back(line(u) + (asked ? ": kept in float by keep_float (mixed precision)"
                                                    : ": kept in float: it adds the float output of a unit keep_float "
                                                      "keeps, which int8 would round again"));
      } else {
        points.insert(calls[u.end].output.unsafeGetTensorImpl());
        p.units.push_back(u);
      }
      i = u.end;
      continue;
    }
    bool keeps_grid = false;
    if (passes_int8(m, &keeps_grid)) {
      if (keeps_grid && !calls[i].inputs.empty() && is_point(calls[i].inputs[0])) {
        points.insert(calls[i].output.unsafeGetTensorImpl());
      }
      if (!calls[i].inputs.empty() && is_kept(calls[i].inputs[0])) kept_out.insert(calls[i].output.unsafeGetTensorImpl());
      continue;
    }
    p.float_calls.push_back(i);
    p.report.skipped.push_back(calls[i].name + ": " + (conv_problem.empty() ? float_reason(m) : conv_problem));
  }

  check_kept(p, keep_float, named);
  for (auto& u : p.units) {
    mark_output(calls, outputs, &u);
    p.report.quantized.push_back(line(u));
  }
  report_uncalled(model, &p);
  return p;
}

void Installs::add(const ModulePtr& layer, const std::string& name, std::shared_ptr<nn::ExtensionImpl> ext, bool first) {
  nn::install(*layer, name, std::move(ext), first);
  done_.emplace_back(layer, name);
}

void Installs::undo() {
  for (auto it = done_.rbegin(); it != done_.rend(); ++it) nn::remove(*it->first, it->second);
  done_.clear();
}

}  // namespace libprune::quant::detail
