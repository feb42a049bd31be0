#include "libprune/nn/batchnorm_fold.h"

#include <array>
#include <optional>

namespace libprune::nn {
namespace {

template <typename Impl>
bool read_norm(const torch::nn::Module& m, BatchNormTensors& out) {
  const auto* bn = dynamic_cast<const Impl*>(&m);
  if (!bn) return false;
  out = {bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->options.eps()};
  return true;
}

std::optional<BatchNormTensors> read_norm_state(const torch::nn::Module& m) {
  BatchNormTensors st;
  if (read_norm<torch::nn::BatchNorm2dImpl>(m, st) || read_norm<torch::nn::BatchNorm1dImpl>(m, st) ||
      read_norm<torch::nn::BatchNorm3dImpl>(m, st)) {
    return st;
  }
  return std::nullopt;
}

BatchNormTensors norm_state(const torch::nn::Module& m) {
  auto st = read_norm_state(m);
  TORCH_CHECK_VALUE(st && st->running_mean.defined() && st->running_var.defined(), "batch-norm folding: ", m.name(),
                    " is not a BatchNorm1d/2d/3d that tracks running statistics. Fix: fold only such batch norms");
  return *st;
}

int64_t version_of(const torch::Tensor& t) {
  try {
    return static_cast<int64_t>(t._version());
  } catch (const c10::Error&) {
    return -2;  // an inference tensor keeps no version: never reuse a cache made from it
  }
}

}  // namespace

bool is_batch_norm(const torch::nn::Module& m) { return read_norm_state(m).has_value(); }

bool tracks_running_stats(const torch::nn::Module& m) {
  const auto st = read_norm_state(m);
  return st && st->running_mean.defined() && st->running_var.defined();
}

torch::Tensor batchnorm_factor(const BatchNormTensors& norm) {
  auto scale = norm.running_var.add(norm.eps).rsqrt();
  return norm.weight.defined() ? scale.mul(norm.weight) : scale;
}

torch::Tensor batchnorm_factor(const torch::nn::Module& norm) { return batchnorm_factor(norm_state(norm)); }

torch::Tensor scale_output_channels(const torch::Tensor& weight, const torch::Tensor& factor) {
  std::vector<int64_t> shape(static_cast<size_t>(weight.dim()), 1);
  shape[0] = -1;
  return weight.mul(factor.reshape(shape)).contiguous(weight.suggest_memory_format());
}

torch::Tensor folded_bias(const torch::Tensor& bias, const BatchNormTensors& norm) {
  const auto shift =
      (bias.defined() ? bias : torch::zeros_like(norm.running_mean)).sub(norm.running_mean).mul(batchnorm_factor(norm));
  return norm.bias.defined() ? shift.add(norm.bias) : shift;
}

torch::Tensor folded_bias(const torch::Tensor& bias, const torch::nn::Module& norm) {
  return folded_bias(bias, norm_state(norm));
}

// Tensors replaced through set_data (pruning, checkpoint loads, channels_last) keep their identity
// and version counter but not their storage, so the cache compares storage, shape and version, and
// keeps an alias of what it saw so that a new storage never reuses that address.
FoldedBatchNormImpl::Seen FoldedBatchNormImpl::Seen::of(const torch::Tensor& t) {
  if (!t.defined()) return {};
  return {t.detach(), version_of(t)};
}

bool FoldedBatchNormImpl::Seen::same(const torch::Tensor& now) const {
  if (alias.defined() != now.defined()) return false;
  if (!alias.defined()) return true;
  return version >= 0 && alias.data_ptr() == now.data_ptr() && alias.sizes() == now.sizes() &&
         alias.strides() == now.strides() && alias.device() == now.device() && alias.dtype() == now.dtype() &&
         version == version_of(now);
}

FoldedBatchNormImpl::FoldedBatchNormImpl(std::shared_ptr<torch::nn::Module> norm) : norm_(norm) {
  TORCH_CHECK_VALUE(norm, "FoldedBatchNorm: the batch norm is null");
  norm_state(*norm);
}

bool FoldedBatchNormImpl::active(const torch::nn::Module& conv) const {
  const auto norm = norm_.lock();
  return norm && !conv.is_training() && !norm->is_training();
}

torch::Tensor FoldedBatchNormImpl::transform(torch::nn::Module& conv, const std::string& tensor,
                                             const torch::Tensor& value) {
  if (!active(conv)) return value;
  const auto norm = norm_.lock();
  const BatchNormTensors st = norm_state(*norm);
  const bool weight = tensor == "weight";
  if (weight) calls.fetch_add(1, std::memory_order_relaxed);
  const std::array<const torch::Tensor*, 5> sources{&value, &st.weight, &st.bias, &st.running_mean, &st.running_var};
  Cache& cache = weight ? weight_cache_ : bias_cache_;
  const auto still = [&] {
    for (size_t k = 0; k < sources.size(); ++k) {
      if (!cache.seen[k].same(*sources[k])) return false;
    }
    return true;
  };
  if (cache.out.defined() && cache.seen.size() == sources.size() && still()) return cache.out;
  torch::NoGradGuard no_grad;
  const auto out = weight ? scale_output_channels(value, batchnorm_factor(*norm)) : folded_bias(value, *norm);
  cache.out = out;
  cache.seen.clear();
  for (const auto* t : sources) cache.seen.push_back(Seen::of(*t));
  return out;
}

FoldedIntoConvImpl::FoldedIntoConvImpl(std::shared_ptr<torch::nn::Module> conv) : conv_(conv) {
  TORCH_CHECK_VALUE(conv, "FoldedIntoConv: the convolution is null");
}

torch::Tensor FoldedIntoConvImpl::forward(torch::nn::Module& norm, const std::vector<torch::Tensor>& inputs,
                                          const Forward& next) {
  const auto conv = conv_.lock();
  if (!conv || conv->is_training() || norm.is_training()) return next(inputs);
  calls.fetch_add(1, std::memory_order_relaxed);
  return inputs.at(0);
}

}  // namespace libprune::nn
