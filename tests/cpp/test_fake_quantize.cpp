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
