#include "libprune/quant/fake_quantize.h"

#include "fake_quant_kernel.h"
#include "libprune/nn/batchnorm_fold.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

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
  scale = options_.learnable() ? register_parameter("scale", torch::ones({n})) : register_buffer("scale", torch::ones({n}));
  zero_point = register_buffer("zero_point", torch::zeros({n}, torch::kInt));
  min_val = register_buffer("min_val", torch::full(range_shape, inf));
  max_val = register_buffer("max_val", torch::full(range_shape, -inf));
  observer_on_ = register_buffer("observer_enabled", torch::ones({1}, torch::kLong));
  fake_quant_on_ = register_buffer("fake_quant_enabled", torch::ones({1}, torch::kLong));
  quant_range_ = register_buffer("quant_range", torch::tensor({qmin_, qmax_}, torch::kLong));
}

namespace {

// About 2^16 of x's values (at most 2^17), taken at an even stride, on the CPU (sorting or searching
// a whole activation at every calibration batch would cost more than the batch).
torch::Tensor sample_of(const torch::Tensor& x) {
  const auto flat = x.detach().reshape({-1}).to(torch::kCPU, torch::kFloat);
  const int64_t n = flat.numel(), step = std::max<int64_t>(1, n / 65536);
  return flat.slice(0, 0, n, step).contiguous();
}

// The (100 - p)-th and p-th percentiles of `x`'s values.
std::tuple<torch::Tensor, torch::Tensor> percentiles(const torch::Tensor& x, double p) {
  const auto sample = sample_of(x);
  const auto q = torch::quantile(sample, torch::tensor({(100.0 - p) / 100.0, p / 100.0}, sample.options()));
  return {q[0], q[1]};
}

// The factor a in (0, 1] that minimises err(a): a geometric pass from 1 down to 2^-10, then a linear
// pass between the best one's neighbours. Ties in the coarse pass keep the wider range.
template <typename Err>
float least_error_factor(const Err& err) {
  constexpr int kCoarse = 41, kFine = 32;
  std::vector<float> coarse(kCoarse);
  for (int k = 0; k < kCoarse; ++k) coarse[static_cast<size_t>(k)] = std::exp2(-static_cast<float>(k) / 4.0f);
  size_t best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (size_t k = 0; k < coarse.size(); ++k) {
    if (const double e = err(coarse[k]); e < best_err) {
      best_err = e;
      best = k;
    }
  }
  const float wide = coarse[best == 0 ? 0 : best - 1], narrow = coarse[std::min(best + 1, coarse.size() - 1)];
  float best_a = coarse[best];
  for (int k = 1; k < kFine; ++k) {
    const float a = narrow + (wide - narrow) * static_cast<float>(k) / kFine;
    if (const double e = err(a); e < best_err) {
      best_err = e;
      best_a = a;
    }
  }
  return best_a;
}

// The range whose grid rounds `x` with the least squared error, searched on a sample of x's values
// with x's extremes added (a stride would miss a rare outlier): first the top as a x max with the
// bottom at min, then the bottom as b x min under that top (zero stays inside). Clipping trades the
// error on the few values beyond the range for a finer grid for all the others.
std::tuple<torch::Tensor, torch::Tensor> mse_range(const torch::Tensor& x, int64_t qmin, int64_t qmax) {
  auto [lo_t, hi_t] = torch::aminmax(x.detach().to(torch::kFloat));
  lo_t = lo_t.to(torch::kCPU);
  hi_t = hi_t.to(torch::kCPU);
  const auto sample = torch::cat({sample_of(x), lo_t.reshape({1}), hi_t.reshape({1})});
  float lo = std::min(lo_t.item<float>(), 0.0f), hi = std::max(hi_t.item<float>(), 0.0f);
  if (!std::isfinite(lo) || !std::isfinite(hi) || hi <= lo) return {lo_t, hi_t};  // nothing to search
  const auto err = [&](float bottom, float top) {
    const auto [scale, zp] = detail::choose_qparams(bottom, top, qmin, qmax, /*symmetric=*/false);
    return detail::rounding_error(sample.data_ptr<float>(), sample.numel(), scale, zp, qmin, qmax);
  };
  if (hi > 0) hi *= least_error_factor([&](float a) { return err(lo, hi * a); });
  if (lo < 0) lo *= least_error_factor([&](float b) { return err(lo * b, hi); });
  return {torch::tensor(lo), torch::tensor(hi)};
}

// What one batch adds to a per-tensor range under the observer: its min and max, percentiles or the
// least-error range.
std::tuple<torch::Tensor, torch::Tensor> batch_range(const torch::Tensor& x, const FakeQuantizeOptions& o, int64_t qmin,
                                                     int64_t qmax) {
  if (o.observer() == Observer::percentile) return percentiles(x, o.percentile());
  if (o.observer() == Observer::mse) return mse_range(x, qmin, qmax);
  return torch::aminmax(x.detach());
}

// Scale and zero point from the observed range, per channel, with ATen's ChooseQuantizationParams.
void qparams_from_range(const FakeQuantState& state, int64_t qmin, int64_t qmax, bool symmetric) {
  torch::NoGradGuard no_grad;
  const auto lo = state.min_val.to(torch::kCPU).contiguous().reshape({-1});
  const auto hi = state.max_val.to(torch::kCPU).contiguous().reshape({-1});
  auto s = torch::empty({lo.numel()}, torch::kFloat);
  auto z = torch::empty({lo.numel()}, torch::kInt);
  const float* l = lo.data_ptr<float>();
  const float* h = hi.data_ptr<float>();
  float* sp = s.data_ptr<float>();
  int* zp = z.data_ptr<int>();
  for (int64_t c = 0; c < lo.numel(); ++c) {
    const auto [sc, zc] = detail::choose_qparams(l[c], h[c], qmin, qmax, symmetric);
    sp[c] = static_cast<float>(sc);
    zp[c] = static_cast<int>(zc);
  }
  state.scale.copy_(s.reshape(state.scale.sizes()));
  state.zero_point.copy_(z.reshape(state.zero_point.sizes()));
}

// The fused kernel's steps on the fast path: the observer's update (in float, as there), the
// parameters from the range, then the rounding.
torch::Tensor per_tensor(const torch::Tensor& x, const FakeQuantState& s, const FakeQuantizeOptions& o, int64_t qmin,
                         int64_t qmax, bool observe) {
  if (observe) {
    torch::NoGradGuard no_grad;
    const auto [lo_t, hi_t] = batch_range(x, o, qmin, qmax);
    const float lo = lo_t.item<float>(), hi = hi_t.item<float>();
    float& lo_run = *s.min_val.data_ptr<float>();
    float& hi_run = *s.max_val.data_ptr<float>();
    if (o.observer() != Observer::moving_average) {
      lo_run = std::isinf(lo_run) ? lo : std::min(lo_run, lo);
      hi_run = std::isinf(hi_run) ? hi : std::max(hi_run, hi);
    } else {
      const auto c = static_cast<float>(o.averaging_constant());
      lo_run = std::isinf(lo_run) ? lo : lo_run + c * (lo - lo_run);
      hi_run = std::isinf(hi_run) ? hi : hi_run + c * (hi - hi_run);
    }
  }
  if (s.fake_quant_enabled.item<int64_t>() == 0) return x;
  qparams_from_range(s, qmin, qmax, /*symmetric=*/false);  // as the fused kernel does on every call
  return detail::fake_quantize_per_tensor(x, s.scale.item<float>(), s.zero_point.item<int>(), qmin, qmax);
}

// The bits a role's integer range stands for.
int64_t bits_of(Role role, int64_t qmax) {
  int64_t bits = 0;
  while ((int64_t{1} << bits) <= qmax) ++bits;
  return role == Role::weight ? bits + 1 : bits;
}

// A state_dict saved with other bits (or role) would round to a grid the scales were not made for.
void check_range(const FakeQuantState& s, const FakeQuantizeOptions& o, int64_t qmin, int64_t qmax) {
  if (!s.quant_range.defined()) return;
  const auto r = s.quant_range.to(torch::kCPU, torch::kLong).contiguous();  // a no-op for the usual buffer
  const int64_t lo = r.data_ptr<int64_t>()[0], hi = r.data_ptr<int64_t>()[1];
  TORCH_CHECK_VALUE(lo == qmin && hi == qmax, "fake quantiser: its state is for the integer range [", lo, ", ", hi,
                    "] (", bits_of(o.role(), hi), " bits) but it was made for [", qmin, ", ", qmax, "] (", o.bits(),
                    " bits): a state_dict or checkpoint saved with other quantization options was loaded. Fix: prepare "
                    "the model with the options the state was saved with");
}

// LSQ's step: ATen's learnable kernels, the gradient to the scale scaled by 1 / sqrt(numel x qmax).
torch::Tensor learned(const torch::Tensor& x, const FakeQuantState& s, int64_t qmin, int64_t qmax, bool per_channel) {
  {
    torch::NoGradGuard no_grad;
    s.scale.clamp_min_(std::numeric_limits<float>::epsilon());  // as torch.ao: a step never reaches 0
  }
  const double grad_factor = 1.0 / std::sqrt(static_cast<double>(x.numel()) * static_cast<double>(qmax));
  const auto zp = s.zero_point.to(torch::kFloat);
  return per_channel ? at::_fake_quantize_learnable_per_channel_affine(x, s.scale, zp, 0, qmin, qmax, grad_factor)
                     : at::_fake_quantize_learnable_per_tensor_affine(x, s.scale, zp, qmin, qmax, grad_factor);
}

}  // namespace

bool observed(const FakeQuantState& s) {
  return s.min_val.numel() > 0 && torch::isfinite(s.min_val).all().item<bool>() &&
         torch::isfinite(s.max_val).all().item<bool>();
}

void calculate_qparams(const FakeQuantState& state, const FakeQuantizeOptions& options) {
  const auto [qmin, qmax] = integer_range(options.role(), options.bits());
  check_range(state, options, qmin, qmax);
  qparams_from_range(state, qmin, qmax, options.role() == Role::weight);
}

void settle_qparams(const FakeQuantState& state, const FakeQuantizeOptions& options) {
  const bool learned = options.learnable() && state.observer_enabled.defined() &&
                       state.observer_enabled.item<int64_t>() == 0;
  if (!learned) calculate_qparams(state, options);
}

torch::Tensor fake_quantize(const torch::Tensor& x, const FakeQuantState& state, const FakeQuantizeOptions& o,
                            bool training) {
  TORCH_CHECK_VALUE(x.is_floating_point(), "fake_quantize: expects a floating tensor, got ", x.scalar_type());
  const auto [qmin, qmax] = integer_range(o.role(), o.bits());
  check_range(state, o, qmin, qmax);
  const bool per_channel = o.role() == Role::weight;
  TORCH_CHECK_VALUE(!per_channel || (x.dim() >= 1 && x.size(0) == state.scale.size(0)), "fake_quantize: the weight has ",
                    x.dim() >= 1 ? x.size(0) : 0, " output channels but the quantiser was made for ", state.scale.size(0),
                    ". Fix: prepare the model again after changing its layers outside the pruner");
  // Observers watch in training mode only, so evaluating a model never moves its ranges (calibration
  // puts the quantisers in training mode: calibration_mode()).
  const bool observe = training && state.observer_enabled.item<int64_t>() != 0;
  // Nothing observed and nothing to observe with: there is no grid to round to yet.
  if (!observe && !observed(state)) return x;
  if (o.learnable() && !observe) {
    // The learned scale as it stands (ATen's fused kernel would set it from the range again).
    if (state.fake_quant_enabled.item<int64_t>() == 0) return x;
    if (training) return learned(x, state, qmin, qmax, per_channel);
    const auto scale = state.scale.detach();
    return per_channel ? at::fake_quantize_per_channel_affine(x, scale, state.zero_point, 0, qmin, qmax)
                       : at::fake_quantize_per_tensor_affine(x, scale.item<double>(), state.zero_point.item<int64_t>(),
                                                             qmin, qmax);
  }
  // Otherwise the observed range sets the scale: it is not differentiated.
  auto s = state;
  s.scale = state.scale.detach();
  if (!per_channel && detail::fast_fake_quantize_applies(x)) return per_tensor(x, s, o, qmin, qmax, observe);
  double averaging = o.averaging_constant();
  if (o.observer() != Observer::moving_average && observe) {
    // The fused kernel keeps a moving average; with the running range widened to include the new
    // values first and an averaging constant of 0, it keeps the widest range seen instead.
    torch::NoGradGuard no_grad;
    const auto d = x.detach();
    const auto [lo, hi] = per_channel ? torch::aminmax(d.reshape({d.size(0), -1}), 1) : batch_range(d, o, qmin, qmax);
    s.min_val.copy_(torch::where(s.min_val.isinf(), lo, torch::minimum(s.min_val, lo)));
    s.max_val.copy_(torch::where(s.max_val.isinf(), hi, torch::maximum(s.max_val, hi)));
    averaging = 0;
  }
  // s holds handles to the same tensors: the kernel updates them in place.
  return at::fused_moving_avg_obs_fake_quant(x, observe ? s.observer_enabled : torch::zeros_like(s.observer_enabled),
                                             s.fake_quant_enabled, s.min_val, s.max_val, s.scale, s.zero_point, averaging,
                                             qmin, qmax, /*ch_axis=*/0, per_channel, /*symmetric_quant=*/per_channel);
}

torch::Tensor FakeQuantizeImpl::apply(const torch::Tensor& x) { return fake_quantize(x, state(), options_, is_training()); }

void FakeQuantizeImpl::calculate_qparams() { quant::calculate_qparams(state(), options_); }

bool FakeQuantizeImpl::observed() const { return quant::observed(state()); }

FakeQuantState FakeQuantizeImpl::state() const {
  return {scale, zero_point, min_val, max_val, observer_on_, fake_quant_on_, quant_range_};
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
  const auto params = conv.named_parameters(false);  // find() points into it: keep it alive
  if (const auto* bias = params.find("bias"); bias && bias->defined()) out = out + bias->reshape(shape);
  return out;
}

}  // namespace libprune::quant
