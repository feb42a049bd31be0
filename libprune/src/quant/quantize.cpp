#include "libprune/quant/quantize.h"

#include "fake_quant_kernel.h"
#include "int8.h"
#include "placement.h"

#include "libprune/nn/batchnorm_fold.h"
#include "libprune/nn/eval_mode.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>

namespace libprune::quant {

using detail::Call;
using detail::Installs;
using detail::installed_of;
using detail::Kind;
using detail::ModulePtr;
using detail::Placement;
using detail::QParams;

std::string Report::explain() const {
  std::ostringstream os;
  os << quantized.size() << " int8 unit" << (quantized.size() == 1 ? "" : "s") << ":\n";
  for (const auto& q : quantized) os << "  " << q << "\n";
  if (!skipped.empty()) {
    os << skipped.size() << " layer" << (skipped.size() == 1 ? "" : "s") << " left in float:\n";
    for (const auto& s : skipped) os << "  " << s << "\n";
  }
  return os.str();
}

bool is_prepared(const torch::nn::Module& model) { return !installed_of<FakeQuantizeImpl>(model).empty(); }

void enable_observers(torch::nn::Module& model, bool on) {
  for (auto& [name, fq] : installed_of<FakeQuantizeImpl>(model)) fq->enable_observer(on);
}

void enable_fake_quant(torch::nn::Module& model, bool on) {
  for (auto& [name, fq] : installed_of<FakeQuantizeImpl>(model)) fq->enable_fake_quant(on);
}

std::vector<torch::Tensor> learnable_scales(torch::nn::Module& model) {
  std::vector<torch::Tensor> out;
  for (auto& [name, fq] : installed_of<FakeQuantizeImpl>(model)) {
    if (fq->options().learnable()) out.push_back(fq->scale);
  }
  return out;
}

void calibration_mode(torch::nn::Module& model) {
  model.eval();
  for (auto& [name, fq] : installed_of<FakeQuantizeImpl>(model)) {
    fq->train();
    fq->enable_observer(true);
    fq->enable_fake_quant(false);
  }
}

LIBPRUNE_DEFINE_OPTION_SPECS(QuantOptions, LIBPRUNE_QUANT_OPTIONS)

Report prepare(torch::nn::Module& model, const graph::Forward& forward, const QuantOptions& options) {
  options::validate<QuantOptions>(QuantOptions::specs(), options, "quant::prepare: ", nullptr);  // before any change
  TORCH_CHECK_VALUE(!is_prepared(model), "quant::prepare: the model already has fake quantisers. Fix: prepare a model once");
  TORCH_CHECK_VALUE(!is_converted(model), "quant::prepare: the model is already converted to int8");
  auto p = detail::place(model, forward, options.keep_float());
  detail::install_fake_quant(p, options).keep();
  return p.report;
}

Report placement(torch::nn::Module& model, const graph::Forward& forward, const QuantOptions& options) {
  options::validate<QuantOptions>(QuantOptions::specs(), options, "quant::placement: ", nullptr);
  return detail::place(model, forward, options.keep_float()).report;
}

Installs detail::install_fake_quant(const Placement& p, const QuantOptions& options) {
  const auto quantiser = [&](Role role, int64_t channels, int input = -1) {
    return std::make_shared<FakeQuantizeImpl>(FakeQuantizeOptions(role, channels)
                                                  .bits(options.bits())
                                                  .observer(options.observer())
                                                  .averaging_constant(options.averaging_constant())
                                                  .percentile(options.percentile())
                                                  .learnable(options.learnable_scales()),
                                              input);
  };
  Installs installs;
  try {
    for (size_t k : p.asked_float) installs.add(p.calls[k].module, detail::kKeepFloat, std::make_shared<detail::KeepFloatImpl>());
    for (const auto& u : p.units) {
      const auto& layer = p.calls[u.layer].module;
      if (u.kind != Kind::add) {
        const int64_t channels = layer->named_parameters(false)["weight"].size(0);
        if (u.norm && options.simulated_fold()) {
          installs.add(layer, kSimulatedFold, std::make_shared<SimulatedFoldImpl>(p.calls[*u.norm].module));
        }
        installs.add(layer, kWeightFakeQuant, quantiser(Role::weight, channels));
      }
      for (size_t k = 0; k < u.observe_input.size(); ++k) {
        const int input = static_cast<int>(k);
        if (u.observe_input[k]) installs.add(layer, input_fake_quant_name(input), quantiser(Role::activation, 1, input));
      }
      // Outermost on the unit's last layer: it rounds what the unit finally outputs, when a layer reads
      // it or it is a conv's or linear's that the model does not return (Unit::rounds_output). The
      // model's output leaves in float, unrounded: a trained classifier's logits span hundreds of
      // units, and a 256-step grid over them would decide the argmax.
      if (u.rounds_output) {
        installs.add(p.calls[u.end].module, kOutputFakeQuant, quantiser(Role::activation, 1), /*first=*/true);
      }
    }
  } catch (...) {
    installs.undo();
    throw;
  }
  return installs;
}

namespace {

// The quantiser `name` on `call`, checked: present, 8 bits, observed.
std::shared_ptr<FakeQuantizeImpl> ready(const Call& call, const std::string& name) {
  auto fq = std::dynamic_pointer_cast<FakeQuantizeImpl>(nn::extension(*call.module, name));
  TORCH_CHECK_VALUE(fq, "quant::convert: ", call.name, " has no ", name,
                    ", so the model was not prepared (or its layers changed since). Fix: quant::prepare, then "
                    "calibrate or train, then convert");
  TORCH_CHECK_VALUE(fq->options().bits() == 8, "quant::convert: ", call.name, ".", name, " simulates ",
                    fq->options().bits(), " bits; only 8 bits convert to int8 kernels. Fix: prepare with bits = 8");
  TORCH_CHECK_VALUE(fq->observed(), "quant::convert: ", call.name, ".", name,
                    " has not observed any finite value, so it has no range. Fix: run calibration batches (or "
                    "train) with observers on before converting");
  // A range observed with rounding off (calibration) has no parameters yet; a learned scale is kept.
  settle_qparams(fq->state(), fq->options());
  return fq;
}

QParams qparams(const FakeQuantizeImpl& fq) { return {fq.scale.item<double>(), fq.zero_point.item<int64_t>()}; }

}  // namespace

// With the simulated fold the quantiser watched weight x factor, so its scales are the folded
// weight's. Without it, it watched the weight itself: folding multiplies channel c by f_c, and a
// per-channel symmetric grid scales with it (scale s_c |f_c|), so round(w f_c / (s_c |f_c|)) is
// the trained integer (sign-flipped where f_c < 0). A channel whose factor is near zero outputs its
// bias whatever its weight; it keeps s_c, so nothing is divided by zero.
torch::Tensor int8_weight(const torch::Tensor& weight, const torch::Tensor& scale, const torch::Tensor& factor,
                          bool simulated_fold) {
  torch::NoGradGuard no_grad;
  auto w = weight.detach();
  auto s = scale.detach().to(torch::kDouble);
  TORCH_CHECK_VALUE(w.dim() >= 1 && s.numel() == w.size(0), "int8_weight: ", s.numel(), " scales for a weight with ",
                    w.dim() >= 1 ? w.size(0) : 0, " output channels. Fix: pass the weight quantiser's scale");
  if (factor.defined()) {
    w = nn::scale_output_channels(w, factor);
    if (!simulated_fold) {
      const auto f = factor.detach().abs().to(torch::kDouble);
      s = torch::where(f < 1e-6, s, s * f);
    }
  }
  return at::quantize_per_channel(w.contiguous(), s, torch::zeros({s.numel()}, torch::kLong), 0, torch::kQInt8);
}

namespace {

// The layer's weight as the int8 kernel takes it (int8_weight) and the folded float bias.
std::pair<torch::Tensor, torch::Tensor> folded_qweight_and_bias(const Placement& p, const detail::Unit& u,
                                                                const FakeQuantizeImpl& wfq) {
  const auto& layer = *p.calls[u.layer].module;
  const auto params = layer.named_parameters(false);  // find() points into it: keep it alive
  const auto* b = params.find("bias");
  torch::Tensor bias = b && b->defined() ? b->detach() : torch::Tensor(), factor;
  if (u.norm) {
    const auto& norm = *p.calls[*u.norm].module;
    factor = nn::batchnorm_factor(norm);
    bias = nn::folded_bias(bias, norm);
  }
  return {int8_weight(params["weight"], wfq.scale, factor, nn::extension(layer, kSimulatedFold) != nullptr),
          bias};
}

struct KernelPlan {
  ModulePtr module;
  std::shared_ptr<detail::Int8Impl> ext;
};

// Every kernel, computed before the model changes; throws when a quantiser is missing or not ready.
std::vector<KernelPlan> plan_kernels(const Placement& p) {
  torch::NoGradGuard no_grad;
  std::vector<KernelPlan> plans;
  for (const auto& u : p.units) {
    const auto& call = p.calls[u.layer];
    // Scale 0: the output leaves in float, computed from the int8 input and weights without rounding.
    const auto out = u.rounds_output ? qparams(*ready(p.calls[u.end], kOutputFakeQuant)) : QParams{0, 0};
    std::vector<std::optional<QParams>> in;
    for (size_t k = 0; k < u.observe_input.size(); ++k) {
      const auto name = input_fake_quant_name(static_cast<int>(k));
      in.push_back(u.observe_input[k] ? std::optional<QParams>(qparams(*ready(call, name))) : std::nullopt);
    }
    const bool relu = u.relu.has_value();
    const bool dequantize = !u.read_by_layers;
    if (u.kind == Kind::add) {
      plans.push_back({call.module, detail::make_int8_add(in, out, relu, dequantize, call.name)});
    } else {
      const auto wfq = ready(call, kWeightFakeQuant);
      const auto [qweight, bias] = folded_qweight_and_bias(p, u, *wfq);
      const auto make = u.kind == Kind::conv ? detail::make_int8_conv2d : detail::make_int8_linear;
      plans.push_back({call.module, make(qweight, bias, in.empty() ? std::nullopt : in[0], out, relu, dequantize, call.name)});
    }
    if (u.norm) plans.push_back({p.calls[*u.norm].module, detail::make_fused_away()});
    if (u.relu) plans.push_back({p.calls[*u.relu].module, detail::make_fused_away()});
  }
  for (size_t i : p.float_calls) plans.push_back({p.calls[i].module, detail::make_float_fallback()});
  return plans;
}

// What prepare installs and convert takes off: quantisers, simulated folds and keep_float marks.
bool simulation_extension(const std::shared_ptr<nn::ExtensionImpl>& ext) {
  return std::dynamic_pointer_cast<FakeQuantizeImpl>(ext) || std::dynamic_pointer_cast<SimulatedFoldImpl>(ext) ||
         std::dynamic_pointer_cast<detail::KeepFloatImpl>(ext);
}

// The placement of the simulated model as it is: observers paused for the pass, then as they were.
Placement place_without_observing(torch::nn::Module& model, const graph::Forward& forward) {
  std::map<FakeQuantizeImpl*, bool> observing;
  for (auto& [name, fq] : installed_of<FakeQuantizeImpl>(model)) observing[fq.get()] = fq->observer_enabled();
  enable_observers(model, false);
  const auto restore = [&] {
    for (auto& [fq, on] : observing) fq->enable_observer(on);
  };
  try {
    auto p = detail::place(model, forward);
    restore();
    return p;
  } catch (...) {
    restore();
    throw;
  }
}

// Takes the quantisers and simulated folds off, puts the kernels on, and checks the model runs;
// on any failure everything is put back as it was.
void swap_in(torch::nn::Module& model, const std::vector<KernelPlan>& plans, const graph::Forward& forward,
             at::QEngine engine) {
  std::vector<std::pair<ModulePtr, std::vector<std::pair<std::string, std::shared_ptr<nn::ExtensionImpl>>>>> removed;
  Installs installs;
  const auto previous_engine = at::globalContext().qEngine();
  try {
    at::globalContext().setQEngine(engine);
    for (const auto& [name, layer] : detail::leaf_layers(model)) {
      auto chain = nn::extensions(*layer);
      if (std::none_of(chain.begin(), chain.end(), [](const auto& e) { return simulation_extension(e.second); })) continue;
      removed.emplace_back(layer, chain);
      for (const auto& [n, ext] : chain) {
        if (simulation_extension(ext)) nn::remove(*layer, n);
      }
    }
    for (const auto& plan : plans) installs.add(plan.module, "int8", plan.ext, /*first=*/true);
    nn::EvalModeGuard eval(model);
    torch::NoGradGuard no_grad;
    for (const auto& out : forward()) {
      if (out.defined() && out.is_floating_point()) {
        TORCH_CHECK(torch::isfinite(out).all().item<bool>(), "the int8 model's output is not finite");
      }
    }
  } catch (const std::exception& e) {
    installs.undo();
    for (auto& [layer, chain] : removed) {
      for (const auto& [name, ext] : nn::extensions(*layer)) nn::remove(*layer, name);
      for (auto& [name, ext] : chain) nn::install(*layer, name, ext);
    }
    at::globalContext().setQEngine(previous_engine);
    TORCH_CHECK(false, "quant::convert failed and left the model as it was: ", e.what());
  }
  installs.keep();
}

}  // namespace

bool is_converted(const torch::nn::Module& model) { return !installed_of<detail::Int8Impl>(model).empty(); }

Report convert(torch::nn::Module& model, const graph::Forward& forward, const ConvertOptions& options) {
  const auto engine = detail::engine_of(options.engine());
  TORCH_CHECK_VALUE(!is_converted(model), "quant::convert: the model is already converted to int8");
  TORCH_CHECK_VALUE(is_prepared(model), "quant::convert: the model has no fake quantisers. Fix: quant::prepare, then "
                                        "calibrate or train, then convert");
  auto p = place_without_observing(model, forward);
  swap_in(model, plan_kernels(p), forward, engine);
  return p.report;
}

namespace {

// Takes every quantiser, simulated fold and int8 kernel off the model's layers.
void remove_quantization(torch::nn::Module& model) {
  for (const auto& item : model.named_modules("", false)) {
    for (const auto& [name, ext] : nn::extensions(*item.value())) {
      if (simulation_extension(ext) || std::dynamic_pointer_cast<detail::Int8Impl>(ext)) nn::remove(*item.value(), name);
    }
  }
}

// What in `file` does not fit the tensors `model` holds: missing, unexpected, or of another shape or type.
std::vector<std::string> deploy_mismatches(const io::StateDict& model, const io::StateDict& file) {
  std::vector<std::string> out;
  for (const auto& [name, t] : model) {
    const auto f = file.find(name);
    if (f == file.end()) {
      out.push_back(name + " is missing");
    } else if (f->second.sizes() != t.sizes() || f->second.scalar_type() != t.scalar_type()) {
      std::ostringstream os;
      os << name << " is " << f->second.scalar_type() << " " << f->second.sizes() << " where the model has "
         << t.scalar_type() << " " << t.sizes();
      out.push_back(os.str());
    }
  }
  for (const auto& [name, t] : file) {
    if (!model.count(name)) out.push_back(name + " is not in the model");
  }
  return out;
}

}  // namespace

Report load_int8(torch::nn::Module& model, const graph::Forward& forward, const io::StateDict& deploy,
                 const std::string& source, const ConvertOptions& options) {
  detail::engine_of(options.engine());  // before any change
  TORCH_CHECK_VALUE(!is_prepared(model) && !is_converted(model), "quant::load_int8(", source,
                    "): the model already has quantisers or int8 kernels. Fix: load into a float model built as the "
                    "converted one was");
  // The units the file holds no int8 kernel for were kept float (mixed precision): keep them float too.
  Names kept, kept_adds;
  const auto probe = detail::place(model, forward);
  for (const auto& u : probe.units) {
    const auto& name = probe.calls[u.layer].name;
    if (!deploy.count(name + ".int8.qparams")) (u.kind == Kind::add ? kept_adds : kept).push_back(name);
  }
  TORCH_CHECK_VALUE(kept.size() + kept_adds.size() < probe.units.size() || probe.units.empty(), "quant::load_int8(",
                    source, "): the file holds no int8 kernel of this model's ", probe.units.size(), " units (first: ",
                    probe.units.empty() ? "" : probe.calls[probe.units.front().layer].name, ".int8.qparams is missing). "
                    "Fix: load the deploy file (int8_state_dict) of this architecture, pruned with the same plans");
  // An add beside a kept conv or linear follows it; name only the other kept adds. Adds never make
  // other units float, so whether an add follows depends only on the convs and linears kept; a named
  // add that also follows places the same either way.
  for (const auto& name : kept_adds) {
    const auto placed = detail::place(model, forward, kept);
    bool follows = false;
    for (size_t k : placed.kept_float) follows = follows || placed.calls[k].name == name;
    if (!follows) kept.push_back(name);
  }
  auto report = prepare(model, forward, QuantOptions().keep_float(kept));
  try {
    {
      torch::NoGradGuard no_grad;
      // Any range converts: the deploy file's values then replace what convert made of it.
      for (auto& [name, fq] : installed_of<FakeQuantizeImpl>(model)) {
        fq->min_val.fill_(-1);
        fq->max_val.fill_(1);
      }
    }
    convert(model, forward, options);
    const auto live = int8_state_dict(model);
    const auto bad = deploy_mismatches(live, deploy);
    TORCH_CHECK_VALUE(bad.empty(), "quant::load_int8(", source, "): the file does not fit the model (",
                      bad.size(), " tensor", bad.size() == 1 ? "" : "s", "; first: ", bad.front(),
                      "). Fix: build the model with the architecture and options it was converted from, and prune it "
                      "with the same plans first");
    torch::NoGradGuard no_grad;
    for (const auto& [name, t] : live) t.copy_(deploy.at(name));
  } catch (...) {
    remove_quantization(model);
    throw;
  }
  repack(model);
  return report;
}

}  // namespace libprune::quant
