#include "int8.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>

namespace libprune::quant::detail {
namespace {

// Rounds a tensor into the int8 domain a kernel expects: float inputs with `in` (their quantiser's
// parameters), int8 inputs from another grid requantised to `in` when the layer has its own quantiser.
torch::Tensor to_int8(const torch::Tensor& x, const std::optional<QParams>& in, const std::string& layer) {
  if (x.is_quantized() && !in) return x;
  TORCH_CHECK(in, "int8 ", layer, ": a float input arrived where an int8 one was expected, and the layer has no "
                  "input quantiser. Fix: prepare the model with the forward that will run it");
  const auto f = x.is_quantized() ? x.dequantize() : x;
  auto q = at::quantize_per_tensor(f, in->scale, in->zero_point, torch::kQUInt8);
  return q.dim() == 4 ? q.contiguous(torch::MemoryFormat::ChannelsLast) : q;
}

std::string current_engine_name() {
  return at::globalContext().qEngine() == at::QEngine::QNNPACK ? "qnnpack" : "onednn";
}

class Int8ConvImpl : public Int8Impl {
 public:
  Int8ConvImpl(const torch::Tensor& qweight, const torch::Tensor& bias, std::optional<QParams> in, QParams out,
               bool relu, bool dequantize_output, std::string layer_name)
      : in_(in), out_(out), relu_(relu), dequantize_(dequantize_output), layer_(std::move(layer_name)) {
    weight = register_buffer("weight", qweight.int_repr());
    weight_scale = register_buffer("weight_scale", qweight.q_per_channel_scales().to(torch::kFloat));
    this->bias = register_buffer("bias", bias.defined() ? bias.detach().clone() : torch::Tensor());
    register_buffer("output_qparams", torch::tensor({out.scale, static_cast<double>(out.zero_point)}, torch::kDouble));
    if (in) register_buffer("input_qparams", torch::tensor({in->scale, static_cast<double>(in->zero_point)}, torch::kDouble));
  }
  torch::Tensor weight, weight_scale, bias;

 protected:
  torch::Tensor quantized_weight() const {
    return at::_make_per_channel_quantized_tensor(weight, weight_scale.to(torch::kDouble),
                                                  torch::zeros({weight_scale.size(0)}, torch::kLong), 0);
  }
  torch::Tensor finish(torch::Tensor y) const { return dequantize_ ? y.dequantize() : y; }
  std::optional<QParams> in_;
  QParams out_;
  bool relu_, dequantize_;
  std::string layer_;
};

class Int8Conv2dImpl : public Int8ConvImpl {
 public:
  using Int8ConvImpl::Int8ConvImpl;
  void repack() override { packed_.reset(); }
  torch::Tensor forward(torch::nn::Module& layer, const std::vector<torch::Tensor>& inputs, const nn::Forward&) override {
    if (!packed_ || engine_ != current_engine_name()) pack(layer);
    const auto x = to_int8(inputs.at(0), in_, layer_);
    return finish(relu_ ? packed_->apply_relu(x, out_.scale, out_.zero_point) : packed_->apply(x, out_.scale, out_.zero_point));
  }

 private:
  void pack(torch::nn::Module& layer) {
    const auto& o = dynamic_cast<torch::nn::Conv2dImpl&>(layer).options;
    const auto pad = c10::get<torch::ExpandingArray<2>>(o.padding());
    static const auto prepack = c10::Dispatcher::singleton()
                                    .findSchemaOrThrow("quantized::conv2d_prepack", "")
                                    .typed<c10::intrusive_ptr<ConvPackedParamsBase<2>>(
                                        at::Tensor, c10::optional<at::Tensor>, torch::List<int64_t>,
                                        torch::List<int64_t>, torch::List<int64_t>, int64_t)>();
    const auto list = [](const torch::ExpandingArray<2>& a) { return torch::List<int64_t>({a->at(0), a->at(1)}); };
    auto qw = quantized_weight().contiguous(torch::MemoryFormat::ChannelsLast);
    packed_ = prepack.call(qw, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt, list(o.stride()),
                           list(pad), list(o.dilation()), o.groups());
    engine_ = current_engine_name();
  }
  c10::intrusive_ptr<ConvPackedParamsBase<2>> packed_;
  std::string engine_;
};

class Int8LinearImpl : public Int8ConvImpl {
 public:
  using Int8ConvImpl::Int8ConvImpl;
  void repack() override { packed_.reset(); }
  torch::Tensor forward(torch::nn::Module& /*layer*/, const std::vector<torch::Tensor>& inputs, const nn::Forward&) override {
    if (!packed_ || engine_ != current_engine_name()) {
      static const auto prepack = c10::Dispatcher::singleton()
                                      .findSchemaOrThrow("quantized::linear_prepack", "")
                                      .typed<c10::intrusive_ptr<LinearPackedParamsBase>(at::Tensor, c10::optional<at::Tensor>)>();
      packed_ = prepack.call(quantized_weight(), bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
      engine_ = current_engine_name();
    }
    const auto x = to_int8(inputs.at(0), in_, layer_);
    return finish(relu_ ? packed_->apply_relu(x, out_.scale, out_.zero_point) : packed_->apply(x, out_.scale, out_.zero_point));
  }

 private:
  c10::intrusive_ptr<LinearPackedParamsBase> packed_;
  std::string engine_;
};

class Int8AddImpl : public Int8Impl {
 public:
  Int8AddImpl(std::vector<std::optional<QParams>> in, QParams out, bool relu, bool dequantize_output, std::string layer_name)
      : in_(std::move(in)), out_(out), relu_(relu), dequantize_(dequantize_output), layer_(std::move(layer_name)) {
    register_buffer("output_qparams", torch::tensor({out.scale, static_cast<double>(out.zero_point)}, torch::kDouble));
  }
  torch::Tensor forward(torch::nn::Module& /*layer*/, const std::vector<torch::Tensor>& inputs, const nn::Forward&) override {
    static const auto add = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::add", "").typed<at::Tensor(at::Tensor, at::Tensor, double, int64_t)>();
    static const auto add_relu = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::add_relu", "").typed<at::Tensor(at::Tensor, at::Tensor, double, int64_t)>();
    TORCH_CHECK(inputs.size() == 2 && in_.size() == 2, "int8 ", layer_, ": an add takes two inputs");
    const auto a = to_int8(inputs[0], in_[0], layer_);
    const auto b = to_int8(inputs[1], in_[1], layer_);
    auto y = (relu_ ? add_relu : add).call(a, b, out_.scale, out_.zero_point);
    return dequantize_ ? y.dequantize() : y;
  }

 private:
  std::vector<std::optional<QParams>> in_;
  QParams out_;
  bool relu_, dequantize_;
  std::string layer_;
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
      if (t.defined() && t.is_quantized()) t = t.dequantize();
    }
    return next(in);
  }
};

}  // namespace

at::QEngine engine_of(const std::string& name) {
  const auto wanted = name == "onednn" ? at::QEngine::ONEDNN : name == "qnnpack" ? at::QEngine::QNNPACK
                    : name == "fbgemm" ? at::QEngine::FBGEMM : at::QEngine::NoQEngine;
  TORCH_CHECK_VALUE(wanted != at::QEngine::NoQEngine, "quant::convert: unknown engine \"", name,
                    "\". Fix: use \"onednn\" (x86) or \"qnnpack\" (ARM)");
  std::string built;
  for (const auto e : at::globalContext().supportedQEngines()) {
    if (e == wanted) return e;
    built += std::string(built.empty() ? "" : ", ") + (e == at::QEngine::ONEDNN ? "onednn" : e == at::QEngine::QNNPACK ? "qnnpack" : e == at::QEngine::FBGEMM ? "fbgemm" : "?");
  }
  TORCH_CHECK_VALUE(false, "quant::convert: the engine \"", name, "\" is not built into this LibTorch (it has: ", built,
                    "). Fix: choose one of those");
  return wanted;
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
