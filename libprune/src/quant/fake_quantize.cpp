#include "libprune/quant/fake_quantize.h"

#include "libprune/nn/batchnorm_fold.h"

#include <limits>

namespace libprune::quant {

std::pair<int64_t, int64_t> integer_range(Role role, int64_t bits) {
  TORCH_CHECK_VALUE(bits >= 2 && bits <= 8, "quantization bits must be 2 to 8, got ", bits,
                    ". Fix: use 8 for int8 deployment, or 2 to 7 to simulate lower precision");
  if (role == Role::weight) return {-(int64_t{1} << (bits - 1)), (int64_t{1} << (bits - 1)) - 1};
  return {0, (int64_t{1} << bits) - 1};
}

std::string input_fake_quant_name(int i) {
  return i == 0 ? "input_fake_quant" : "input" + std::to_string(i) + "_fake_quant";
}

FakeQuantizeImpl::FakeQuantizeImpl(FakeQuantizeOptions options, int input) : options_(options), input_(input) {
  std::tie(qmin_, qmax_) = integer_range(options_.role(), options_.bits());
  TORCH_CHECK_VALUE(options_.channels() >= 1, "FakeQuantize: channels must be at least 1, got ", options_.channels());
  TORCH_CHECK_VALUE(options_.averaging_constant() > 0 && options_.averaging_constant() <= 1,
                    "FakeQuantize: averaging_constant must be in (0, 1], got ", options_.averaging_constant());
  TORCH_CHECK_VALUE(options_.role() == Role::activation || input_ < 0,
                    "FakeQuantize: a weight quantiser acts on the weight, not on an input");
  const bool per_channel = options_.role() == Role::weight;
  const auto inf = std::numeric_limits<float>::infinity();
  const std::vector<int64_t> range_shape = per_channel ? std::vector<int64_t>{options_.channels()} : std::vector<int64_t>{};
  const int64_t n = per_channel ? options_.channels() : 1;
  scale = register_buffer("scale", torch::ones({n}));
  zero_point = register_buffer("zero_point", torch::zeros({n}, torch::kInt));
  min_val = register_buffer("min_val", torch::full(range_shape, inf));
  max_val = register_buffer("max_val", torch::full(range_shape, -inf));
  observer_on_ = register_buffer("observer_enabled", torch::ones({1}, torch::kLong));
  fake_quant_on_ = register_buffer("fake_quant_enabled", torch::ones({1}, torch::kLong));
}

torch::Tensor FakeQuantizeImpl::apply(const torch::Tensor& x) {
  TORCH_CHECK_VALUE(x.is_floating_point(), "FakeQuantize ", name(), ": expects a floating tensor, got ", x.scalar_type());
  const bool per_channel = options_.role() == Role::weight;
  TORCH_CHECK_VALUE(!per_channel || (x.dim() >= 1 && x.size(0) == scale.size(0)), "FakeQuantize: the weight has ",
                    x.dim() >= 1 ? x.size(0) : 0, " output channels but the quantiser was made for ", scale.size(0),
                    ". Fix: prepare the model again after changing its layers outside the pruner");
  // Nothing observed and nothing to observe with: there is no grid to round to yet.
  if (!observer_enabled() && !observed()) return x;
  double averaging = options_.averaging_constant();
  if (options_.observer() == Observer::min_max && observer_enabled()) {
    // The fused kernel keeps a moving average; with the running range widened to include the new
    // values first and an averaging constant of 0, it keeps the overall min and max instead.
    torch::NoGradGuard no_grad;
    const auto d = x.detach();
    if (per_channel) {
      const auto flat = d.reshape({d.size(0), -1});
      const auto [lo, hi] = torch::aminmax(flat, 1);
      min_val.copy_(torch::where(min_val.isinf(), lo, torch::minimum(min_val, lo)));
      max_val.copy_(torch::where(max_val.isinf(), hi, torch::maximum(max_val, hi)));
    } else {
      const auto [lo, hi] = torch::aminmax(d);
      min_val.copy_(torch::where(min_val.isinf(), lo, torch::minimum(min_val, lo)));
      max_val.copy_(torch::where(max_val.isinf(), hi, torch::maximum(max_val, hi)));
    }
    averaging = 0;
  }
  return at::fused_moving_avg_obs_fake_quant(x, observer_on_, fake_quant_on_, min_val, max_val, scale, zero_point,
                                             averaging, qmin_, qmax_, /*ch_axis=*/0, per_channel,
                                             /*symmetric_quant=*/per_channel);
}

bool FakeQuantizeImpl::observed() const {
  return min_val.numel() > 0 && torch::isfinite(min_val).all().item<bool>() &&
         torch::isfinite(max_val).all().item<bool>();
}

void FakeQuantizeImpl::enable_observer(bool on) { observer_on_.fill_(on ? 1 : 0); }
void FakeQuantizeImpl::enable_fake_quant(bool on) { fake_quant_on_.fill_(on ? 1 : 0); }
bool FakeQuantizeImpl::observer_enabled() const { return observer_on_.item<int64_t>() != 0; }
bool FakeQuantizeImpl::fake_quant_enabled() const { return fake_quant_on_.item<int64_t>() != 0; }

torch::Tensor FakeQuantizeImpl::forward(torch::nn::Module& /*layer*/, const std::vector<torch::Tensor>& inputs,
                                        const nn::Forward& next) {
  if (options_.role() == Role::weight) return next(inputs);
  if (input_ < 0) return apply(next(inputs));
  TORCH_CHECK_VALUE(static_cast<size_t>(input_) < inputs.size(), "FakeQuantize ", name(), ": the layer has ",
                    inputs.size(), " inputs, so there is no input ", input_);
  auto rounded = inputs;
  rounded[static_cast<size_t>(input_)] = apply(inputs[static_cast<size_t>(input_)]);
  return next(rounded);
}

std::vector<std::string> FakeQuantizeImpl::transformed() const {
  if (options_.role() == Role::weight) return {"weight"};
  return {};
}

torch::Tensor FakeQuantizeImpl::transform(torch::nn::Module& /*layer*/, const std::string& tensor,
                                          const torch::Tensor& value) {
  return tensor == "weight" ? apply(value) : value;
}

std::vector<nn::ChannelTie> FakeQuantizeImpl::channel_ties() const {
  if (options_.role() != Role::weight) return {};
  return {{"scale", 0, "weight", 0}, {"zero_point", 0, "weight", 0}, {"min_val", 0, "weight", 0},
          {"max_val", 0, "weight", 0}};
}

SimulatedFoldImpl::SimulatedFoldImpl(std::shared_ptr<torch::nn::Module> norm) : norm_(norm) {
  TORCH_CHECK_VALUE(norm && nn::tracks_running_stats(*norm), "SimulatedFold: ", norm ? norm->name() : "(null)",
                    " is not a batch norm that tracks running statistics, so it cannot be folded");
}

std::shared_ptr<torch::nn::Module> SimulatedFoldImpl::norm() const {
  auto n = norm_.lock();
  TORCH_CHECK(n, "SimulatedFold: its batch norm no longer exists. Fix: prepare the model again");
  return n;
}

torch::Tensor SimulatedFoldImpl::factor() const {
  const auto f = nn::batchnorm_factor(*norm());
  // Below this a channel's batch norm output is its shift whatever the conv computes.
  return torch::where(f.abs() < 1e-6, torch::ones_like(f), f);
}

torch::Tensor SimulatedFoldImpl::transform(torch::nn::Module& /*conv*/, const std::string& tensor,
                                           const torch::Tensor& value) {
  if (tensor == "bias") return value.defined() ? torch::zeros_like(value) : value;  // added after the division
  return nn::scale_output_channels(value, factor());
}

torch::Tensor SimulatedFoldImpl::forward(torch::nn::Module& conv, const std::vector<torch::Tensor>& inputs,
                                         const nn::Forward& next) {
  const auto y = next(inputs);
  std::vector<int64_t> shape(static_cast<size_t>(y.dim()), 1);
  shape[1] = -1;
  auto out = y / factor().reshape(shape);
  if (const auto* bias = conv.named_parameters(false).find("bias"); bias && bias->defined()) {
    out = out + bias->reshape(shape);
  }
  return out;
}

}  // namespace libprune::quant
