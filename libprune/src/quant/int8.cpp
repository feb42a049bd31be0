#include "int8.h"
#include "fake_quant_kernel.h"
#include "placement.h"

#include "libprune/quant/quantize.h"

#include "libprune/options.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>

#include <atomic>
#include <cmath>
#include <set>

#include <algorithm>

namespace libprune::quant::detail {

std::atomic<int64_t>& packs_made_counter() {
  static std::atomic<int64_t> count{0};
  return count;
}

namespace {

// Rounds a tensor into the int8 domain a kernel expects: float inputs with `in` (their quantiser's
// parameters), int8 inputs from another grid requantised to `in` when the layer has its own quantiser.
torch::Tensor to_int8(const torch::Tensor& x, const std::optional<QParams>& in, const std::string& layer) {
  if (x.is_quantized() && !in) return x;
  TORCH_CHECK(in, "int8 ", layer, ": a float input arrived where an int8 one was expected, and the layer has no "
                  "input quantiser. Fix: prepare the model with the forward that will run it");
  auto f = quant::dequantize(x);
  if (f.dim() == 4) f = f.contiguous(torch::MemoryFormat::ChannelsLast);  // the layout the kernels run in
  return quant::quantize_per_tensor(f, in->scale, in->zero_point);
}

// What every int8 kernel holds: the quantisation parameters of its inputs (those with a quantiser of
// their own) and output, whether a ReLU is fused, and whether its output leaves as float. An output
// scale of 0 means the output has no grid (the model's output): the kernel computes in float from
// its int8 inputs and weights, as the simulation does with no output quantiser.
//
// They are also one buffer, "qparams" (float64: output scale, output zero point, 1 if the output
// leaves as float, then per input its scale and zero point, scale 0 where the input has no quantiser
// of its own), so the kernel's state_dict (quant::int8_state_dict, the deploy file) holds everything
// the int8 model computes with, in one small tensor a kernel; repack() reads it back after a load.
class Int8KernelImpl : public Int8Impl {
 public:
  Int8KernelImpl(std::vector<std::optional<QParams>> in, QParams out, bool relu, bool dequantize_output, std::string layer)
      : in_(std::move(in)), out_(out), relu_(relu), dequantize_(dequantize_output), layer_(std::move(layer)) {
    std::vector<double> q{out_.scale, static_cast<double>(out_.zero_point), dequantize_ ? 1.0 : 0.0};
    for (const auto& p : in_) {
      q.push_back(p ? p->scale : 0.0);
      q.push_back(p ? static_cast<double>(p->zero_point) : 0.0);
    }
    register_buffer("qparams", torch::tensor(q, torch::kDouble));
  }
  void repack() override {
    const auto q = named_buffers(false)["qparams"].contiguous();
    const double* v = q.data_ptr<double>();
    out_ = {v[0], static_cast<int64_t>(v[1])};
    dequantize_ = v[2] != 0;
    for (size_t k = 0; k < in_.size(); ++k) {
      const double scale = v[3 + 2 * k];
      in_[k] = scale > 0 ? std::optional<QParams>(QParams{scale, static_cast<int64_t>(v[4 + 2 * k])}) : std::nullopt;
    }
  }

 protected:
  torch::Tensor finish(const torch::Tensor& y) const { return dequantize_ ? quant::dequantize(y) : y; }
  bool float_output() const { return out_.scale == 0; }
  torch::Tensor relu_if_fused(const torch::Tensor& y) const { return relu_ ? y.clamp_min(0) : y; }
  std::vector<std::optional<QParams>> in_;
  QParams out_;
  bool relu_, dequantize_;
  std::string layer_;
};

// A conv or linear kernel: int8 weights with per-channel scales and a float bias as buffers, packed
// for the current engine on the first call after construction or repack().
template <typename Packed>
class Int8WeightedImpl : public Int8KernelImpl {
 public:
  Int8WeightedImpl(const torch::Tensor& qweight, const torch::Tensor& bias, std::optional<QParams> in, QParams out,
                   bool relu, bool dequantize_output, std::string layer)
      : Int8KernelImpl({in}, out, relu, dequantize_output, std::move(layer)) {
    weight = register_buffer("weight", qweight.int_repr());
    weight_scale = register_buffer("weight_scale", qweight.q_per_channel_scales().to(torch::kFloat));
    this->bias = register_buffer("bias", bias.defined() ? bias.detach().clone() : torch::Tensor());
  }
  torch::Tensor weight, weight_scale, bias;

  void repack() override {
    Int8KernelImpl::repack();
    packed_.reset();
    float_weight_ = torch::Tensor();
  }
  torch::Tensor forward(torch::nn::Module& layer, const std::vector<torch::Tensor>& inputs, const nn::Forward&) override {
    const auto x = to_int8(inputs.at(0), in_.at(0), layer_);
    if (float_output()) {  // no int8 kernel runs, so nothing is packed
      if (!float_weight_.defined()) float_weight_ = quantized_weight().dequantize();
      return relu_if_fused(float_apply(layer, quant::dequantize(x), float_weight_));
    }
    if (!packed_ || engine_ != at::globalContext().qEngine()) {
      packed_ = counted_pack(layer);
      engine_ = at::globalContext().qEngine();
    }
    const auto run = [&] {
      return finish(relu_ ? packed_->apply_relu(x, out_.scale, out_.zero_point)
                          : packed_->apply(x, out_.scale, out_.zero_point));
    };
    try {
      return run();
    } catch (const std::exception&) {
      // oneDNN (LibTorch 1.13) keeps the weight layout of a pack's first shape: a 1x1 conv first run
      // on a 1x1 input at batch 1 then fails at another batch ("could not create a primitive
      // descriptor for a reorder primitive"). A pack made for this shape runs; packs are per shape
      // for timing anyway.
      packed_ = counted_pack(layer);
    }
    try {
      return run();
    } catch (const std::exception& e) {  // oneDNN's own words name no layer
      TORCH_CHECK(false, "int8 ", layer_, ": the kernel failed on an input of shape ", x.sizes(), " (input scale ",
                  x.q_scale(), ", output scale ", out_.scale, ", weight scales ", weight_scale.min().item<float>(),
                  " to ", weight_scale.max().item<float>(), "): ", e.what(),
                  ". Fix: check that the layer's inputs are finite and of a sane size (batch norms whose running "
                  "statistics do not match the data, as after a few training steps, blow activations up)");
    }
  }

 protected:
  virtual c10::intrusive_ptr<Packed> pack(torch::nn::Module& layer) const = 0;
  // The layer's op in float on the int8 input and weight, dequantised (an output without a grid).
  virtual torch::Tensor float_apply(torch::nn::Module& layer, const torch::Tensor& x, const torch::Tensor& w) const = 0;
  torch::Tensor quantized_weight() const {
    return at::_make_per_channel_quantized_tensor(weight, weight_scale.to(torch::kDouble),
                                                  torch::zeros({weight_scale.size(0)}, torch::kLong), 0);
  }
  c10::optional<at::Tensor> optional_bias() const { return bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt; }

 private:
  c10::intrusive_ptr<Packed> counted_pack(torch::nn::Module& layer) {
    packs_made_counter().fetch_add(1, std::memory_order_relaxed);
    return pack(layer);
  }
  c10::intrusive_ptr<Packed> packed_;
  at::QEngine engine_ = at::QEngine::NoQEngine;
  torch::Tensor float_weight_;  // the dequantised int8 weight, for an output without a grid
};

class Int8Conv2dImpl : public Int8WeightedImpl<ConvPackedParamsBase<2>> {
 public:
  using Int8WeightedImpl::Int8WeightedImpl;

 protected:
  c10::intrusive_ptr<ConvPackedParamsBase<2>> pack(torch::nn::Module& layer) const override {
    const auto& o = dynamic_cast<torch::nn::Conv2dImpl&>(layer).options;
    static const auto prepack = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("quantized::conv2d_prepack", "")
                                    .typed<c10::intrusive_ptr<ConvPackedParamsBase<2>>(
                                        at::Tensor, c10::optional<at::Tensor>, torch::List<int64_t>,
                                        torch::List<int64_t>, torch::List<int64_t>, int64_t)>();
    const auto list = [](const torch::ExpandingArray<2>& a) { return torch::List<int64_t>({a->at(0), a->at(1)}); };
    return prepack.call(quantized_weight().contiguous(torch::MemoryFormat::ChannelsLast), optional_bias(),
                        list(o.stride()), list(c10::get<torch::ExpandingArray<2>>(o.padding())), list(o.dilation()),
                        o.groups());
  }
  torch::Tensor float_apply(torch::nn::Module& layer, const torch::Tensor& x, const torch::Tensor& w) const override {
    const auto& o = dynamic_cast<torch::nn::Conv2dImpl&>(layer).options;
    return at::conv2d(x, w, bias, *o.stride(), *c10::get<torch::ExpandingArray<2>>(o.padding()), *o.dilation(), o.groups());
  }
};

class Int8LinearImpl : public Int8WeightedImpl<LinearPackedParamsBase> {
 public:
  using Int8WeightedImpl::Int8WeightedImpl;

 protected:
  c10::intrusive_ptr<LinearPackedParamsBase> pack(torch::nn::Module& /*layer*/) const override {
    static const auto prepack = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("quantized::linear_prepack", "")
                                    .typed<c10::intrusive_ptr<LinearPackedParamsBase>(at::Tensor, c10::optional<at::Tensor>)>();
    return prepack.call(quantized_weight(), optional_bias());
  }
  torch::Tensor float_apply(torch::nn::Module& /*layer*/, const torch::Tensor& x, const torch::Tensor& w) const override {
    return at::linear(x, w, bias);
  }
};

class Int8AddImpl : public Int8KernelImpl {
 public:
  using Int8KernelImpl::Int8KernelImpl;
  torch::Tensor forward(torch::nn::Module& /*layer*/, const std::vector<torch::Tensor>& inputs, const nn::Forward&) override {
    using Add = at::Tensor(at::Tensor, at::Tensor, double, int64_t);
    static const auto add = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::add", "").typed<Add>();
    static const auto add_relu = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::add_relu", "").typed<Add>();
    TORCH_CHECK(inputs.size() == 2 && in_.size() == 2, "int8 ", layer_, ": an add takes two inputs");
    const auto a = to_int8(inputs[0], in_[0], layer_);
    const auto b = to_int8(inputs[1], in_[1], layer_);
    if (float_output()) return relu_if_fused(quant::dequantize(a) + quant::dequantize(b));
    return finish((relu_ ? add_relu : add).call(a, b, out_.scale, out_.zero_point));
  }
};

// On a batch norm or ReLU fused into the int8 kernel before it: passes its input on.
class FusedAwayImpl : public Int8Impl {
 public:
  torch::Tensor forward(torch::nn::Module&, const std::vector<torch::Tensor>& inputs, const nn::Forward&) override {
    return inputs.at(0);
  }
};

// On a layer that stays float: dequantises its int8 inputs.
class FloatFallbackImpl : public Int8Impl {
 public:
  torch::Tensor forward(torch::nn::Module&, const std::vector<torch::Tensor>& inputs, const nn::Forward& next) override {
    auto in = inputs;
    for (auto& t : in) {
      if (t.defined()) t = quant::dequantize(t);
    }
    return next(in);
  }
};

}  // namespace

at::QEngine engine_of(const std::string& name) {
  static const std::vector<std::pair<std::string, at::QEngine>> kEngines{
      {"onednn", at::QEngine::ONEDNN}, {"qnnpack", at::QEngine::QNNPACK}, {"fbgemm", at::QEngine::FBGEMM}};
  const auto known = std::find_if(kEngines.begin(), kEngines.end(), [&](const auto& e) { return e.first == name; });
  TORCH_CHECK_VALUE(known != kEngines.end(), "quant::convert: unknown engine \"", name,
                    "\". Fix: use \"onednn\" (x86) or \"qnnpack\" (ARM)");
  std::vector<std::string> built;
  for (const auto e : at::globalContext().supportedQEngines()) {
    if (e == known->second) return e;
    for (const auto& [n, engine] : kEngines) {
      if (engine == e) built.push_back(n);
    }
  }
  TORCH_CHECK_VALUE(false, "quant::convert: the engine \"", name, "\" is not built into this LibTorch (it has: ",
                    options::join(built), "). Fix: choose one of those");
  return known->second;
}

std::shared_ptr<Int8Impl> make_int8_conv2d(const torch::Tensor& qweight, const torch::Tensor& bias, std::optional<QParams> in,
                                           QParams out, bool relu, bool dequantize_output, const std::string& layer) {
  return std::make_shared<Int8Conv2dImpl>(qweight, bias, in, out, relu, dequantize_output, layer);
}

std::shared_ptr<Int8Impl> make_int8_linear(const torch::Tensor& qweight, const torch::Tensor& bias, std::optional<QParams> in,
                                           QParams out, bool relu, bool dequantize_output, const std::string& layer) {
  return std::make_shared<Int8LinearImpl>(qweight, bias, in, out, relu, dequantize_output, layer);
}

std::shared_ptr<Int8Impl> make_int8_add(std::vector<std::optional<QParams>> in, QParams out, bool relu,
                                        bool dequantize_output, const std::string& layer) {
  return std::make_shared<Int8AddImpl>(std::move(in), out, relu, dequantize_output, layer);
}

std::shared_ptr<Int8Impl> make_fused_away() { return std::make_shared<FusedAwayImpl>(); }
std::shared_ptr<Int8Impl> make_float_fallback() { return std::make_shared<FloatFallbackImpl>(); }

bool is_float_fallback(const torch::nn::Module& ext) { return dynamic_cast<const FloatFallbackImpl*>(&ext) != nullptr; }

}  // namespace libprune::quant::detail

namespace libprune::quant {

// The int8 model's state: packs, the input rounding and the deploy file's tensors.

void repack(torch::nn::Module& model) {
  for (auto& [name, ext] : detail::installed_of<detail::Int8Impl>(model)) ext->repack();
}

torch::Tensor quantize_per_tensor(const torch::Tensor& x, double scale, int64_t zero_point) {
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0, "quant::quantize_per_tensor: scale must be a positive finite "
                    "number, got ", scale, ". Fix: take it from an observed quantiser");
  TORCH_CHECK_VALUE(zero_point >= 0 && zero_point <= 255, "quant::quantize_per_tensor: zero_point must be in 0..255 "
                    "(quint8), got ", zero_point);
  if (detail::fast_fake_quantize_applies(x)) return detail::quantize_to_quint8(x, scale, zero_point);
  return at::quantize_per_tensor(x, scale, zero_point, torch::kQUInt8);
}

torch::Tensor dequantize(const torch::Tensor& q) {
  if (!q.is_quantized()) return q;
  return detail::fast_dequantize_applies(q) ? detail::dequantize_quint8(q) : q.dequantize();
}

int64_t packs_made() { return detail::packs_made_counter().load(std::memory_order_relaxed); }

io::StateDict int8_state_dict(const torch::nn::Module& model) {
  // Layers whose own tensors the int8 kernels replace (convs, linears) or fold away (batch norms).
  std::set<const torch::nn::Module*> replaced;
  for (const auto& item : model.named_modules("", false)) {
    for (const auto& [name, ext] : nn::extensions(*item.value())) {
      if (std::dynamic_pointer_cast<detail::Int8Impl>(ext) && !detail::is_float_fallback(*ext)) {
        replaced.insert(item.value().get());
      }
    }
  }
  io::StateDict out;
  for (const auto& item : model.named_modules("", false)) {
    const auto* m = item.value().get();
    const bool is_ext = dynamic_cast<const nn::ExtensionImpl*>(m) != nullptr;
    if (!is_ext && replaced.count(m)) continue;
    if (is_ext && !dynamic_cast<const detail::Int8Impl*>(m)) continue;  // fake quantisers are gone after convert
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(false)) out[prefix + p.key()] = p.value();
    for (const auto& b : item.value()->named_buffers(false)) {
      if (b.value().defined()) out[prefix + b.key()] = b.value();
    }
  }
  return out;
}

int64_t int8_state_bytes(const torch::nn::Module& model) {
  int64_t bytes = 0;
  for (const auto& [name, t] : int8_state_dict(model)) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

}  // namespace libprune::quant
