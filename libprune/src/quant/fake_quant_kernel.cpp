#include "fake_quant_kernel.h"

#include <ATen/Parallel.h>
#include <ATen/native/quantized/cpu/QuantUtils.h>
#include <torch/torch.h>

#include <algorithm>

namespace libprune::quant::detail {
namespace {

// Built for AVX-512, AVX2 and the baseline, chosen when the library loads: the round-to-nearest-even
// of the baseline x86-64 (SSE2) is a library call per element.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LIBPRUNE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LIBPRUNE_VECTOR_CLONES
#endif

struct Grid {
  float scale, inv_scale, zero_point, qmin, qmax;
};

LIBPRUNE_VECTOR_CLONES void round_to_grid(const float* __restrict x, float* __restrict y, int64_t n, Grid g) {
  for (int64_t i = 0; i < n; ++i) {
    const float q = __builtin_nearbyintf(x[i] * g.inv_scale) + g.zero_point;
    // max(qmin, min(q, qmax)) in this order: a NaN becomes qmin, as ATen's integer cast makes it.
    y[i] = (std::max(g.qmin, std::min(q, g.qmax)) - g.zero_point) * g.scale;
  }
}

LIBPRUNE_VECTOR_CLONES void pass_inside_grid(const float* __restrict x, const float* __restrict dy, float* __restrict dx,
                                             int64_t n, Grid g) {
  for (int64_t i = 0; i < n; ++i) {
    const float q = __builtin_nearbyintf(x[i] * g.inv_scale) + g.zero_point;
    dx[i] = (q >= g.qmin && q <= g.qmax) ? dy[i] : 0.0f;
  }
}

// The integers themselves, as ATen's quantize_per_tensor stores them (quint8).
LIBPRUNE_VECTOR_CLONES void round_to_uint8(const float* __restrict x, uint8_t* __restrict y, int64_t n, Grid g) {
  for (int64_t i = 0; i < n; ++i) {
    const float q = __builtin_nearbyintf(x[i] * g.inv_scale) + g.zero_point;
    y[i] = static_cast<uint8_t>(std::max(g.qmin, std::min(q, g.qmax)));
  }
}

// Back to float as ATen's dequantize computes it on this build: (q - zero_point) * scale, one rounding.
LIBPRUNE_VECTOR_CLONES void from_uint8(const uint8_t* __restrict q, float* __restrict y, int64_t n, float scale, float zero_point) {
  for (int64_t i = 0; i < n; ++i) y[i] = (static_cast<float>(q[i]) - zero_point) * scale;
}

LIBPRUNE_VECTOR_CLONES double squared_error(const float* __restrict x, int64_t n, Grid g) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::max(g.qmin, std::min(__builtin_nearbyintf(x[i] * g.inv_scale) + g.zero_point, g.qmax));
    const float e = (q - g.zero_point) * g.scale - x[i];
    sum += static_cast<double>(e) * e;
  }
  return sum;
}

constexpr int64_t kGrain = 32768;

class FastFakeQuantize : public torch::autograd::Function<FastFakeQuantize> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, double scale, int64_t zero_point,
                            int64_t qmin, int64_t qmax) {
    ctx->save_for_backward({x});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["zero_point"] = zero_point;
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    const Grid g = grid(scale, zero_point, qmin, qmax);
    auto y = at::empty_like(x);
    const float* in = x.data_ptr<float>();
    float* out = y.data_ptr<float>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) { round_to_grid(in + begin, out + begin, end - begin, g); });
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto x = ctx->get_saved_variables()[0];
    auto dy = grads[0];
    if (dy.strides() != x.strides()) dy = at::empty_like(x).copy_(dy);  // walk both in the same order
    dy = dy.to(at::kFloat);
    const Grid g = grid(ctx->saved_data["scale"].toDouble(), ctx->saved_data["zero_point"].toInt(),
                        ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt());
    auto dx = at::empty_like(x);
    const float* in = x.data_ptr<float>();
    const float* d = dy.data_ptr<float>();
    float* out = dx.data_ptr<float>();
    at::parallel_for(0, x.numel(), kGrain,
                     [&](int64_t begin, int64_t end) { pass_inside_grid(in + begin, d + begin, out + begin, end - begin, g); });
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  static Grid grid(double scale, int64_t zero_point, int64_t qmin, int64_t qmax) {
    const auto s = static_cast<float>(scale);
    return {s, 1.0f / s, static_cast<float>(zero_point), static_cast<float>(qmin), static_cast<float>(qmax)};
  }
};

}  // namespace

bool fast_fake_quantize_applies(const at::Tensor& x) {
  return x.defined() && x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_non_overlapping_and_dense();
}

at::Tensor fake_quantize_per_tensor(const at::Tensor& x, float scale, int64_t zero_point, int64_t qmin, int64_t qmax) {
  TORCH_CHECK(fast_fake_quantize_applies(x), "fake_quantize_per_tensor: expects a dense float32 CPU tensor");
  return FastFakeQuantize::apply(x, static_cast<double>(scale), zero_point, qmin, qmax);
}

double rounding_error(const float* x, int64_t n, float scale, int64_t zero_point, int64_t qmin, int64_t qmax) {
  const Grid g{scale, 1.0f / scale, static_cast<float>(zero_point), static_cast<float>(qmin), static_cast<float>(qmax)};
  return squared_error(x, n, g);
}

at::Tensor quantize_to_quint8(const at::Tensor& x, double scale, int64_t zero_point) {
  TORCH_CHECK(fast_fake_quantize_applies(x), "quantize_to_quint8: expects a dense float32 CPU tensor");
  const auto format = x.suggest_memory_format();
  const auto f = x.contiguous(format);
  auto q = at::_empty_affine_quantized(f.sizes(), f.options().dtype(at::kQUInt8), scale, zero_point, format);
  const auto s = static_cast<float>(scale);
  const Grid g{s, 1.0f / s, static_cast<float>(zero_point), 0.0f, 255.0f};
  const float* in = f.data_ptr<float>();
  auto* out = reinterpret_cast<uint8_t*>(q.data_ptr<c10::quint8>());
  at::parallel_for(0, f.numel(), kGrain, [&](int64_t begin, int64_t end) { round_to_uint8(in + begin, out + begin, end - begin, g); });
  return q;
}

bool fast_dequantize_applies(const at::Tensor& q) {
  return q.defined() && q.device().is_cpu() && q.scalar_type() == at::kQUInt8 &&
         q.qscheme() == at::kPerTensorAffine && q.is_non_overlapping_and_dense();
}

at::Tensor dequantize_quint8(const at::Tensor& q) {
  TORCH_CHECK(fast_dequantize_applies(q), "dequantize_quint8: expects a dense per-tensor quint8 CPU tensor");
  // Same sizes and strides: the loop walks both buffers in memory order, whatever the layout.
  auto y = at::empty_strided(q.sizes(), q.strides(), q.options().dtype(at::kFloat));
  const auto* in = reinterpret_cast<const uint8_t*>(q.data_ptr<c10::quint8>());
  float* out = y.data_ptr<float>();
  const auto scale = static_cast<float>(q.q_scale());
  const auto zero_point = static_cast<float>(q.q_zero_point());
  at::parallel_for(0, q.numel(), kGrain, [&](int64_t begin, int64_t end) { from_uint8(in + begin, out + begin, end - begin, scale, zero_point); });
  return y;
}

std::pair<float, int64_t> choose_qparams(float min, float max, int64_t qmin, int64_t qmax, bool symmetric) {
  const auto q = quant_utils::ChooseQuantizationParams(min, max, static_cast<int32_t>(qmin), static_cast<int32_t>(qmax),
                                                       symmetric, false, false);
  return {q.scale, q.zero_point};
}

}  // namespace libprune::quant::detail
