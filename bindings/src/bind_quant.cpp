#include "common.h"

#include "libprune/nn/batchnorm_fold.h"
#include "libprune/quant/fake_quantize.h"
#include "libprune/quant/quantize.h"
#include "libprune/quant/sensitivity.h"

namespace libprune::bindings {
namespace {

quant::Role role_of(const std::string& role) {
  TORCH_CHECK_VALUE(role == "weight" || role == "activation", "role must be \"weight\" or \"activation\", got \"", role,
                    "\"");
  return role == "weight" ? quant::Role::weight : quant::Role::activation;
}

quant::FakeQuantizeOptions options_of(const std::string& role, int64_t channels, int64_t bits,
                                      const std::string& observer, double averaging_constant, double percentile,
                                      bool learnable = false) {
  return quant::FakeQuantizeOptions(role_of(role), channels)
      .learnable(learnable)
      .bits(bits)
      .observer(options::parse<quant::Observer>(observer))
      .averaging_constant(averaging_constant)
      .percentile(percentile);
}

}  // namespace

// The quantiser's math for libprune.quantize.FakeQuantize (a Python module owning the state).
void bind_quant(py::module_& m) {
  bind_options<quant::QuantOptions>(m, "QuantOptions", "Quantization options: QuantOptions(bits=8, observer=\"moving_average\")");
  m.def("_quant_options", [](const py::kwargs& kwargs) {
    auto o = from_kwargs<quant::QuantOptions>(kwargs, "prepare_qat()");
    options::validate<quant::QuantOptions>(quant::QuantOptions::specs(), o, "prepare_qat(): ");
    return o;
  });
  m.def(
      "_fake_quantize",
      [](const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& zero_point, const torch::Tensor& min_val,
         const torch::Tensor& max_val, const torch::Tensor& observer_enabled, const torch::Tensor& fake_quant_enabled,
         const torch::Tensor& quant_range, const std::string& role, int64_t bits, const std::string& observer,
         double averaging_constant, double percentile, bool learnable, bool training) {
        const quant::FakeQuantState state{scale,           zero_point,         min_val,    max_val,
                                          observer_enabled, fake_quant_enabled, quant_range};
        return quant::fake_quantize(
            x, state, options_of(role, scale.numel(), bits, observer, averaging_constant, percentile, learnable),
            training);
      },
      py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("min_val"), py::arg("max_val"),
      py::arg("observer_enabled"), py::arg("fake_quant_enabled"), py::arg("quant_range"), py::arg("role"),
      py::arg("bits"), py::arg("observer"), py::arg("averaging_constant"), py::arg("percentile"), py::arg("learnable"),
      py::arg("training"));
  m.def(
      "_calculate_qparams",
      [](const torch::Tensor& scale, const torch::Tensor& zero_point, const torch::Tensor& min_val,
         const torch::Tensor& max_val, const torch::Tensor& quant_range, const std::string& role, int64_t bits) {
        const quant::FakeQuantState state{scale, zero_point, min_val, max_val, {}, {}, quant_range};
        quant::calculate_qparams(state, options_of(role, scale.numel(), bits, "min_max", 0.01, 99.99));
      },
      py::arg("scale"), py::arg("zero_point"), py::arg("min_val"), py::arg("max_val"), py::arg("quant_range"),
      py::arg("role"), py::arg("bits"));
  m.def("_check_sensitivity_bits", &quant::check_sensitivity_bits, py::arg("name"), py::arg("bits"));
  m.def("_worst_units", &quant::worst_units, py::arg("scan_json"), py::arg("bits"), py::arg("count"));
  m.def("_quantize_per_tensor", &quant::quantize_per_tensor, py::arg("x"), py::arg("scale"), py::arg("zero_point"));
  // A conv's or linear's int8 weight and float bias with the following batch norm (its tensors, or
  // none) folded in: what C++ convert gives its int8 kernel.
  m.def(
      "_int8_weight_and_bias",
      [](const torch::Tensor& weight, const std::optional<torch::Tensor>& bias, const torch::Tensor& scale,
         const std::optional<std::vector<std::optional<torch::Tensor>>>& norm, double eps) {
        torch::NoGradGuard no_grad;
        torch::Tensor b = bias ? bias->detach() : torch::Tensor(), factor;
        if (norm) {
          TORCH_CHECK_VALUE(norm->size() == 4, "_int8_weight_and_bias: norm is (weight, bias, running_mean, running_var)");
          const auto at = [&](size_t i) { return (*norm)[i] ? (*norm)[i]->detach() : torch::Tensor(); };
          const nn::BatchNormTensors bn{at(0), at(1), at(2), at(3), eps};
          factor = nn::batchnorm_factor(bn);
          b = nn::folded_bias(b, bn);
        }
        return std::make_pair(quant::int8_weight(weight, scale, factor, false), b);
      },
      py::arg("weight"), py::arg("bias"), py::arg("scale"), py::arg("norm"), py::arg("eps"));
  m.def(
      "_settle_qparams",
      [](const torch::Tensor& scale, const torch::Tensor& zero_point, const torch::Tensor& min_val,
         const torch::Tensor& max_val, const torch::Tensor& observer_enabled, const torch::Tensor& quant_range,
         const std::string& role, int64_t bits, bool learnable) {
        torch::NoGradGuard no_grad;
        const quant::FakeQuantState state{scale, zero_point, min_val, max_val, observer_enabled, {}, quant_range};
        quant::settle_qparams(state, options_of(role, scale.numel(), bits, "min_max", 0.01, 99.99, learnable));
      },
      py::arg("scale"), py::arg("zero_point"), py::arg("min_val"), py::arg("max_val"), py::arg("observer_enabled"),
      py::arg("quant_range"), py::arg("role"), py::arg("bits"), py::arg("learnable"));
  m.def(
      "_integer_range", [](const std::string& role, int64_t bits) { return quant::integer_range(role_of(role), bits); },
      py::arg("role"), py::arg("bits"));
}

}  // namespace libprune::bindings
