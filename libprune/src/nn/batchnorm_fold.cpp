#include "libprune/nn/batchnorm_fold.h"

#include <algorithm>

namespace libprune::nn {
namespace {

struct NormState {
  torch::Tensor weight, bias, mean, var;
  double eps = 0;
};

template <typename Impl>
bool read_norm(const torch::nn::Module& m, NormState& out) {
  const auto* bn = dynamic_cast<const Impl*>(&m);
  if (!bn) return false;
  out = {bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->options.eps()};
  return true;
}

NormState norm_state(const torch::nn::Module& m) {
  NormState st;
  const bool known = read_norm<torch::nn::BatchNorm2dImpl>(m, st) || read_norm<torch::nn::BatchNorm1dImpl>(m, st) ||
                     read_norm<torch::nn::BatchNorm3dImpl>(m, st);
  TORCH_CHECK_VALUE(known && st.mean.defined() && st.var.defined(), "FoldedBatchNorm: ", m.name(),
                    " is not a BatchNorm1d/2d/3d that tracks running statistics. Fix: fold only such batch norms");
  return st;
}

int64_t version_of(const torch::Tensor& t) {
  if (!t.defined()) return -1;
  try {
    return static_cast<int64_t>(t._version());
  } catch (const c10::Error&) {
    return -2;  // an inference tensor keeps no version: never reuse a cache made from it
  }
}

}  // namespace

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
  const NormState st = norm_state(*norm);
  const bool weight = tensor == "weight";
  if (weight) calls.fetch_add(1, std::memory_order_relaxed);
  // The cache holds the tensor it was made from, so a fresh tensor at a reused address never matches.
  std::vector<int64_t> key{version_of(value), version_of(st.weight), version_of(st.bias), version_of(st.mean),
                           version_of(st.var)};
  auto& cached = weight ? cached_weight_ : cached_bias_;
  auto& cached_key = weight ? key_weight_ : key_bias_;
  auto& source = weight ? weight_source_ : bias_source_;
  const bool reusable = std::all_of(key.begin(), key.end(), [](int64_t v) { return v != -2; });
  if (reusable && cached.defined() && key == cached_key && source.is_same(value)) return cached;
  torch::NoGradGuard no_grad;
  auto scale = st.var.add(st.eps).rsqrt();
  if (st.weight.defined()) scale = scale.mul(st.weight);
  torch::Tensor out;
  if (weight) {
    std::vector<int64_t> shape(static_cast<size_t>(value.dim()), 1);
    shape[0] = -1;
    out = value.mul(scale.reshape(shape)).contiguous(value.suggest_memory_format());
  } else {
    const auto shift = (value.defined() ? value : torch::zeros_like(st.mean)).sub(st.mean).mul(scale);
    out = st.bias.defined() ? shift.add(st.bias) : shift;
  }
  cached = out;
  cached_key = std::move(key);
  source = value;
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
