// The quantiser's observers and rounding against ATen's fused kernel (what torch.ao runs).
#include "helpers.h"
#include "libprune/libprune.h"

#include <limits>
#include <map>

using namespace libprune;

TEST_CASE("quant: the fast per-tensor path equals ATen's fused observer and fake-quant kernel bit for bit", "[quant]") {
  // The kernel torch.ao's FusedMovingAvgObsFakeQuantize runs, on the same sequence of inputs, layouts and modes.
  for (const auto observer : {quant::Observer::moving_average, quant::Observer::min_max}) {
    quant::FakeQuantize fq(quant::FakeQuantizeOptions(quant::Role::activation, 1).observer(observer));
    const auto inf = std::numeric_limits<float>::infinity();
    auto lo = torch::full({}, inf), hi = torch::full({}, -inf), scale = torch::ones({1}), zp = torch::zeros({1}, torch::kInt);
    const auto on = torch::ones({1}, torch::kLong);
    torch::manual_seed(7);
    for (int step = 0; step < 6; ++step) {
      auto x = (torch::randn({4, 8, 5, 5}) * (1 + step) + 0.3 * step).contiguous(step % 2 ? torch::MemoryFormat::ChannelsLast
                                                                                          : torch::MemoryFormat::Contiguous);
      x.requires_grad_(true);
      if (observer == quant::Observer::min_max) {  // what a min-max observer hands the fused kernel
        lo = torch::minimum(lo, x.detach().min());
        hi = torch::maximum(hi, x.detach().max());
      }
      const double c = observer == quant::Observer::min_max ? 0.0 : 0.01;
      const auto xr = x.detach().clone().requires_grad_(true);
      const auto ref = at::fused_moving_avg_obs_fake_quant(xr, on, on, lo, hi, scale, zp, c, 0, 255, 0, false, false);
      const auto out = fq->apply(x);
      INFO("step " << step);
      CHECK(torch::equal(out, ref));
      CHECK(torch::equal(fq->scale, scale));
      CHECK(torch::equal(fq->zero_point, zp));
      CHECK(torch::equal(fq->min_val, lo));
      CHECK(torch::equal(fq->max_val, hi));
      // The straight-through gradient: passed inside the grid, zero outside.
      const auto g = torch::randn_like(ref);
      (out * g).sum().backward();
      (ref * g).sum().backward();
      CHECK(torch::equal(x.grad(), xr.grad()));
    }
  }
}

TEST_CASE("quant: a percentile observer clips a rare outlier that a min-max observer keeps", "[quant]") {
  torch::manual_seed(5);
  auto x = torch::randn({32, 8, 16, 16});
  x.view({-1})[777] = 1000.0;  // one value in 65536
  std::map<quant::Observer, float> top;
  for (const auto o : {quant::Observer::min_max, quant::Observer::percentile}) {
    quant::FakeQuantize fq(quant::FakeQuantizeOptions(quant::Role::activation, 1).observer(o));
    fq->apply(x);
    fq->apply(x * 0.5);  // a narrower batch does not narrow either
    top[o] = fq->max_val.item<float>();
  }
  CHECK(top[quant::Observer::min_max] == 1000.0f);
  CHECK(top[quant::Observer::percentile] > 3.0f);
  CHECK(top[quant::Observer::percentile] < 5.0f);  // the 99.99th percentile of a standard normal is 3.7
  CHECK_THROWS_WITH(quant::prepare(*models::cifar_resnet(20, models::ModelOptions().num_classes(10)), [] { return std::vector<torch::Tensor>{}; },
                                   quant::QuantOptions().observer(quant::Observer::percentile).percentile(30)),
                    Catch::Contains("percentile must be in (50, 100]"));
}

TEST_CASE("quant: an mse observer clips where that lowers the rounding error, and not where it does not", "[quant]") {
  const auto error_with = [](quant::Observer o, const torch::Tensor& x, int64_t bits) {
    quant::FakeQuantize fq(quant::FakeQuantizeOptions(quant::Role::activation, 1).observer(o).bits(bits).percentile(99.99));
    const auto out = fq->apply(x);  // observes, then rounds with the range it chose
    return std::make_tuple((out - x).pow(2).sum().item<double>(), fq->min_val.item<float>(), fq->max_val.item<float>());
  };
  torch::manual_seed(5);
  // Laplace(0, 1) at 4 bits: the error-minimising clip is near 5 (Banner et al. 2019 give 5.03 for a
  // symmetric 4-bit grid); the extremes of 65536 draws lie near +-10.
  const auto laplace = (-torch::log(torch::rand({65536})) + torch::log(torch::rand({65536})));
  const auto [l_err, l_lo, l_hi] = error_with(quant::Observer::mse, laplace, 4);
  const auto [lm_err, lm_lo, lm_hi] = error_with(quant::Observer::min_max, laplace, 4);
  INFO("laplace, 4 bits: mse [" << l_lo << ", " << l_hi << "] error " << l_err << "; min_max [" << lm_lo << ", " << lm_hi
                                << "] " << lm_err);
  CHECK(l_hi > 3.0f);
  CHECK(l_hi < 8.0f);
  CHECK(l_lo < -3.0f);
  CHECK(l_lo > -8.0f);
  CHECK(l_err < 0.6 * lm_err);
  // One huge outlier: clipping it would cost more than the finer grid saves, so the range keeps it
  // (the percentile observer clips it and pays).
  auto x = torch::randn({32, 8, 16, 16});
  x.view({-1})[777] = 1000.0;
  const auto [mse_err, mse_lo, mse_hi] = error_with(quant::Observer::mse, x, 8);
  const auto [minmax_err, minmax_lo, minmax_hi] = error_with(quant::Observer::min_max, x, 8);
  const auto [pct_err, pct_lo, pct_hi] = error_with(quant::Observer::percentile, x, 8);
  INFO("outlier: mse [" << mse_lo << ", " << mse_hi << "] error " << mse_err << "; min_max " << minmax_err
                        << "; percentile " << pct_err);
  CHECK(mse_hi > 900.0f);
  CHECK(mse_err <= minmax_err);
  CHECK(mse_err < pct_err / 10);
  // The same in a tensor sampled at a stride of 4, the outlier between the samples: still seen.
  auto big = torch::randn({4 * 65536});
  big[1] = 1000.0;
  CHECK(std::get<2>(error_with(quant::Observer::mse, big, 8)) > 900.0f);
  // Uniform values: any clipping costs more than it buys, so the range stays (nearly) whole.
  const auto u = torch::rand({65536});
  const auto [u_err, u_lo, u_hi] = error_with(quant::Observer::mse, u, 8);
  CHECK(u_hi > 0.97f * u.max().item<float>());
  CHECK(u_lo == 0.0f);  // zero stays inside the range
  CHECK(u_err <= std::get<0>(error_with(quant::Observer::min_max, u, 8)));
}

TEST_CASE("quant: quantize_per_tensor gives ATen's integers, in the input's layout", "[quant]") {
  torch::manual_seed(3);
  for (const auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    auto x = torch::randn({3, 5, 7, 9}) * 4;
    auto flat = x.view({-1});  // ties, values beyond the grid, zero
    flat[0] = 0.25f;
    flat[1] = 0.75f;
    flat[2] = -1e6f;
    flat[3] = 1e6f;
    flat[4] = 0.0f;
    x = x.contiguous(format);
    const double scale = 0.5;
    const int64_t zp = 100;
    const auto ours = quant::quantize_per_tensor(x, scale, zp);
    const auto aten = at::quantize_per_tensor(x, scale, zp, torch::kQUInt8);
    CHECK(ours.is_contiguous(format));
    CHECK(ours.q_scale() == scale);
    CHECK(ours.q_zero_point() == zp);
    CHECK(torch::equal(ours.int_repr(), aten.int_repr()));
  }
  // NaN rounds to 0, the bottom of the grid, as the fake quantiser rounds it (ATen's result for NaN
  // depends on how LibTorch was built).
  const auto nan = torch::full({4}, std::numeric_limits<float>::quiet_NaN());
  CHECK(quant::quantize_per_tensor(nan, 0.5, 100).int_repr().eq(0).all().item<bool>());
  CHECK_THROWS_WITH(quant::quantize_per_tensor(nan, 0.0, 0), Catch::Contains("scale must be a positive finite"));
  CHECK_THROWS_WITH(quant::quantize_per_tensor(nan, 0.5, 256), Catch::Contains("zero_point must be in 0..255"));
  // Not dense (every other column): ATen's own path, same integers.
  const auto d = torch::randn({4, 6}).slice(1, 0, 6, 2);
  CHECK_FALSE(d.is_non_overlapping_and_dense());
  CHECK(torch::equal(quant::quantize_per_tensor(d, 0.1, 3).int_repr(), at::quantize_per_tensor(d, 0.1, 3, torch::kQUInt8).int_repr()));
}

TEST_CASE("quant: dequantize gives ATen's floats, in the input's layout; other tensors go to ATen", "[quant]") {
  torch::manual_seed(4);
  // Scales and zero points where (q - zp) * s and a fused q * s - zp * s round differently.
  for (const auto& [scale, zp] : std::vector<std::pair<double, int64_t>>{{0.0123456, 37}, {1e-3, 255}, {0.3, 0}}) {
    for (const auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
      const auto q = at::quantize_per_tensor(torch::randn({3, 5, 7, 9}) * 60 * scale, scale, zp, torch::kQUInt8).contiguous(format);
      const auto ours = quant::dequantize(q);
      CHECK(ours.scalar_type() == torch::kFloat);
      CHECK(ours.is_contiguous(format));
      CHECK(torch::equal(ours, q.dequantize()));
    }
  }
  // A 3-D text activation, a transposed (strided but dense) view, a float tensor, per-channel qint8.
  const auto q3 = at::quantize_per_tensor(torch::randn({2, 33, 16}), 0.02, 128, torch::kQUInt8);
  CHECK(torch::equal(quant::dequantize(q3), q3.dequantize()));
  const auto qt = q3.transpose(1, 2);
  CHECK(torch::equal(quant::dequantize(qt), qt.dequantize()));
  const auto f = torch::randn({4});
  CHECK(quant::dequantize(f).data_ptr() == f.data_ptr());
  const auto w = at::quantize_per_channel(torch::randn({4, 3}), torch::full({4}, 0.1, torch::kDouble), torch::zeros({4}, torch::kLong), 0,
                                          torch::kQInt8);
  CHECK(torch::equal(quant::dequantize(w), w.dequantize()));
}
