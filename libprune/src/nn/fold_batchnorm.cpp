#include "libprune/nn/fold_batchnorm.h"

#include "libprune/nn/eval_mode.h"
#include "libprune/nn/hook.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <sstream>

namespace libprune::nn {
namespace {

bool is_batch_norm(const graph::TracedNode& n) {
  return n.op == "NativeBatchNorm" || n.op == "CudnnBatchNorm" || n.op == "MiopenBatchNorm";
}

bool is_conv_module(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::Conv1dImpl*>(&m) || dynamic_cast<const torch::nn::Conv2dImpl*>(&m) ||
         dynamic_cast<const torch::nn::Conv3dImpl*>(&m);
}

struct NormState {
  torch::Tensor weight, bias, mean, var;
  double eps = 0;
  bool tracks = false;
};

template <typename Impl>
bool read_norm(const torch::nn::Module& m, NormState& out) {
  const auto* bn = dynamic_cast<const Impl*>(&m);
  if (!bn) return false;
  out = {bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->options.eps(), bn->options.track_running_stats()};
  return true;
}

bool read_norm(const torch::nn::Module& m, NormState& out) {
  return read_norm<torch::nn::BatchNorm1dImpl>(m, out) || read_norm<torch::nn::BatchNorm2dImpl>(m, out) ||
         read_norm<torch::nn::BatchNorm3dImpl>(m, out);
}

// "layer1.0.bn1.weight" -> "layer1.0.bn1"; empty when the node is not a named `.weight`.
std::string module_of_weight(const graph::Trace& trace, int node) {
  return node < 0 ? std::string() : graph::module_of_weight(trace.nodes()[static_cast<size_t>(node)].param_name);
}

}  // namespace

struct BatchNormFolding::Installed {
  FoldedPair names;
  const torch::nn::Module* conv = nullptr;
  const torch::nn::Module* norm = nullptr;
  torch::Tensor weight, bias;
  std::vector<int64_t> stride, padding, dilation, output_padding;
  int64_t groups = 1;
  graph::Shape traced_input;  // the conv's input in the trace: a module that pads first sees another shape
  std::atomic<int64_t> conv_calls{0}, norm_calls{0};
  std::atomic<bool> input_differs{false};
  bool checking = false;  // the input check runs on the example only (other batch or image sizes are fine later)
  bool active = false;
};

BatchNormFolding::BatchNormFolding(torch::nn::Module& model, const graph::Forward& forward) {
  const auto trace = graph::Trace::capture(model, forward);
  const auto& nodes = trace.nodes();
  std::vector<int> readers(nodes.size(), 0);
  for (const auto& n : nodes) {
    for (int in : n.inputs) {
      if (in >= 0) ++readers[static_cast<size_t>(in)];
    }
  }
  for (int out : trace.outputs()) {
    if (out >= 0) ++readers[static_cast<size_t>(out)];
  }
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  for (const auto& item : model.named_modules("", false)) modules[item.key()] = item.value();

  for (const auto& n : nodes) {
    if (!is_batch_norm(n) || n.inputs.empty() || n.inputs[0] < 0) continue;
    const auto& c = nodes[static_cast<size_t>(n.inputs[0])];
    if (c.kind != graph::OpKind::Conv) continue;
    const std::string norm_name = module_of_weight(trace, n.inputs.size() > 1 ? n.inputs[1] : -1);
    const std::string conv_name = module_of_weight(trace, c.inputs.size() > 1 ? c.inputs[1] : -1);
    auto skip = [&](const std::string& why) {
      skipped_.push_back((norm_name.empty() ? std::string("a batch norm after '") + conv_name + "'" : norm_name) +
                         ": " + why);
    };
    if (norm_name.empty() || !modules.count(norm_name)) {
      skip("it has no named affine weight (affine=false), so there is nothing to read its scale from");
      continue;
    }
    if (conv_name.empty() || !modules.count(conv_name)) {
      skip("the convolution before it has no named weight parameter");
      continue;
    }
    if (c.attr("transposed") != 0) {
      skip("the convolution before it is transposed");
      continue;
    }
    if (readers[static_cast<size_t>(n.inputs[0])] != 1) {
      skip("the output of '" + conv_name + "' is also read elsewhere, so it must stay unnormalised");
      continue;
    }
    const auto& conv = modules.at(conv_name);
    const auto& norm = modules.at(norm_name);
    if (!is_conv_module(*conv)) {
      skip("'" + conv_name + "' is not a torch::nn::Conv1d/2d/3d, so its forward may do more than convolve");
      continue;
    }
    NormState st;
    if (!read_norm(*norm, st)) {
      skip("'" + norm_name + "' is not a torch::nn::BatchNorm1d/2d/3d");
      continue;
    }
    if (!st.tracks || !st.mean.defined() || !st.var.defined()) {
      skip("it does not track running statistics, so in eval mode it normalises by the batch");
      continue;
    }
    if (detail::find_forward_wrapper(*conv) || detail::find_forward_wrapper(*norm)) {
      skip("'" + conv_name + "' or '" + norm_name + "' already has a forward wrapper (QAT?)");
      continue;
    }
    auto p = std::make_shared<Installed>();
    p->names = {conv_name, norm_name};
    p->conv = conv.get();
    p->norm = norm.get();
    {
      torch::NoGradGuard no_grad;
      const auto conv_params = conv->named_parameters(false);
      const auto w = conv_params["weight"];
      auto scale = st.var.add(st.eps).rsqrt();
      if (st.weight.defined()) scale = scale.mul(st.weight);
      std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
      shape[0] = -1;
      p->weight = w.mul(scale.reshape(shape)).contiguous(w.suggest_memory_format());
      const auto* conv_bias = conv_params.find("bias");
      auto shift = (conv_bias && conv_bias->defined() ? *conv_bias : torch::zeros_like(st.mean)).sub(st.mean).mul(scale);
      p->bias = st.bias.defined() ? shift.add(st.bias) : shift;
    }
    p->stride = c.attrs.at("stride");
    p->padding = c.attrs.at("padding");
    p->dilation = c.attrs.at("dilation");
    p->output_padding = c.attrs.count("output_padding") ? c.attrs.at("output_padding") : std::vector<int64_t>{};
    p->groups = c.attr("groups", 1);
    p->traced_input = c.input_shapes.empty() ? graph::Shape{} : c.input_shapes[0];
    installed_.push_back(p);
  }

  if (installed_.empty()) return;

  EvalModeGuard eval(model);
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> reference = forward();  // unfolded: nothing installed yet

  // Install, then check every pair on the example: both wrappers must run (the model calls these
  // modules through the wrapper table) and the conv must receive the traced input (no padding
  // inside the module). Pairs that fail are removed and listed, and the check repeats.
  for (auto& p : installed_) install(*p);
  std::vector<torch::Tensor> out;
  for (bool clean = false; !clean;) {
    for (auto& p : installed_) {
      p->conv_calls = 0;
      p->norm_calls = 0;
      p->input_differs = false;
      p->checking = true;
    }
    out = forward();
    clean = true;
    for (auto& p : installed_) {
      if (!p->active) continue;
      std::string why;
      if (p->conv_calls == 0 || p->norm_calls == 0) {
        why = "'" + (p->conv_calls == 0 ? p->names.conv : p->names.norm) +
              "' is not called through libprune::nn::call (or a Chain), so a wrapper cannot replace it. Fix: call "
              "it as libprune::nn::call(module, x) in the model's forward";
      } else if (p->input_differs) {
        why = "'" + p->names.conv + "' changes its input before the convolution (padding_mode other than zeros?)";
      }
      if (!why.empty()) {
        remove(*p);
        skipped_.push_back(p->names.norm + ": " + why);
        clean = false;
      }
    }
  }
  for (auto& p : installed_) p->checking = false;
  bool same = out.size() == reference.size();
  for (size_t i = 0; same && i < out.size(); ++i) {
    const auto& r = reference[i];
    if (!r.defined() || !r.is_floating_point()) continue;
    // A diverged model's output may hold NaN or inf: compare where it is finite (and NaN to NaN).
    const auto finite = r.isfinite();
    const double scale = finite.any().item<bool>() ? r.masked_select(finite).abs().max().item<double>() : 1.0;
    same = out[i].sizes() == r.sizes() && torch::allclose(out[i], r, 1e-3, 1e-4 * std::max(scale, 1.0), true);
  }
  if (!same) {
    std::ostringstream names;
    for (auto& p : installed_) {
      if (p->active) names << " " << p->names.conv << "+" << p->names.norm;
      remove(*p);
    }
    TORCH_CHECK(false, "fold_batchnorm: the folded model's output differs from the unfolded one; nothing was folded "
                "(pairs tried:", names.str(), "). Fix: report the model; time it unfolded meanwhile");
  }
  for (auto& p : installed_) {
    if (p->active) folded_.push_back(p->names);
  }
}

void BatchNormFolding::install(Installed& p) {
  Installed* raw = &p;
  set_forward_wrapper(*p.conv, [raw](torch::nn::Module& m, const std::vector<torch::Tensor>& in,
                                     const ForwardFn& original) {
    if (m.is_training() || raw->norm->is_training()) return original(in);
    const auto& x = in.at(0);
    if (raw->checking) {  // the example pass only: timed calls do nothing but the convolution
      raw->conv_calls.fetch_add(1, std::memory_order_relaxed);
      if (!raw->traced_input.empty() && (x.dim() != static_cast<int64_t>(raw->traced_input.size()) ||
                                         x.sizes().slice(1) != c10::IntArrayRef(raw->traced_input).slice(1))) {
        raw->input_differs.store(true, std::memory_order_relaxed);
        return original(in);
      }
    }
    return torch::convolution(x, raw->weight, raw->bias, raw->stride, raw->padding, raw->dilation, false,
                              raw->output_padding, raw->groups);
  });
  set_forward_wrapper(*p.norm, [raw](torch::nn::Module& m, const std::vector<torch::Tensor>& in,
                                     const ForwardFn& original) {
    if (m.is_training() || raw->conv->is_training()) return original(in);
    if (raw->checking) raw->norm_calls.fetch_add(1, std::memory_order_relaxed);
    return in.at(0);
  });
  p.active = true;
}

void BatchNormFolding::remove(Installed& p) {
  if (!p.active) return;
  remove_forward_wrapper(*p.conv);
  remove_forward_wrapper(*p.norm);
  p.active = false;
}

BatchNormFolding::~BatchNormFolding() {
  for (auto& p : installed_) remove(*p);
}

}  // namespace libprune::nn
