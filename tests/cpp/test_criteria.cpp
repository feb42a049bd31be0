// Which channels each criterion keeps, through the pruner, on a layer built so that every criterion
// keeps a different pair (worked by hand below): a criterion that is ignored or stubbed cannot pass.
#include "helpers.h"
#include "libprune/libprune.h"

#include <set>

using namespace libprune;

namespace {

// 0: Linear(3, 4) -> 1: BatchNorm1d(4) -> 2: ReLU -> 3: Linear(4, 2), layer 3 ignored, so the one
// group is the 4 hidden units: rows of 0.weight, 0.bias, 1.weight, 1.bias, columns of 3.weight.
//   rows of 0.weight: [2.5 0 0], [1 1 1], [.9 .9 .9], [.2 .2 .2]; biases 0
//   1.weight (gamma): .1 .2 1 .9;   3.weight: [.01 .04 .02 .03], [0 0 0 0]
//   l1 = row L1 + |gamma| + column L1:  2.61  3.24  3.72  1.53  -> keeps {1, 2}
//   l2^2:                               6.26  3.04  3.43  0.93  -> keeps {0, 2}
//   bn_scale = |gamma|:                 .1    .2    1     .9    -> keeps {2, 3}
//   fpgm (sum of row distances):        6.42  3.62  3.43  4.92  -> keeps {0, 3}
//   lamp (0.weight rows + 3.weight columns, each w^2 / sum of w^2 not smaller):
//                                       1.03  1.32  .35   .37   -> keeps {0, 1}
//   taylor, |w dL/dw| with dL/dw = 0 but rows 1 ([1 1 1]) and 3 ([10 10 10]) of 0.weight:
//                                       0     3     0     6     -> keeps {1, 3}
torch::nn::Sequential model() {
  torch::nn::Sequential net(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4), torch::nn::ReLU(), torch::nn::Linear(4, 2));
  torch::NoGradGuard no_grad;
  auto p = net->named_parameters();
  p["0.weight"].copy_(torch::tensor({{2.5, 0.0, 0.0}, {1.0, 1.0, 1.0}, {0.9, 0.9, 0.9}, {0.2, 0.2, 0.2}}));
  p["0.bias"].zero_();
  p["1.weight"].copy_(torch::tensor({0.1, 0.2, 1.0, 0.9}));
  p["1.bias"].zero_();
  p["3.weight"].copy_(torch::tensor({{0.01, 0.04, 0.02, 0.03}, {0.0, 0.0, 0.0, 0.0}}));
  for (auto& t : net->parameters()) t.mutable_grad() = torch::zeros_like(t);
  p["0.weight"].mutable_grad().copy_(torch::tensor({{0.0, 0.0, 0.0}, {1.0, 1.0, 1.0}, {0.0, 0.0, 0.0}, {10.0, 10.0, 10.0}}));
  return net;
}

std::vector<int64_t> kept(const std::string& criterion, uint64_t seed = 0) {
  auto net = model();
  const auto x = torch::randn({8, 3});
  prune::Pruner pruner(net.ptr(), [net, x]() mutable { return std::vector<torch::Tensor>{net->forward(x)}; },
                       prune::PrunerOptions().ratio(0.5).importance(criterion).seed(seed).ignored_layers({"3"}));
  const auto plan = pruner.plan();
  for (const auto& cut : plan.cuts) {
    if (cut.tensor == "0.weight" && cut.dim == 0) return cut.keep;
  }
  return {};
}

}  // namespace

TEST_CASE("criteria: each keeps the channels it ranks highest, through the pruner, worked by hand", "[prune]") {
  CHECK(kept("l1") == std::vector<int64_t>{1, 2});
  CHECK(kept("l2") == std::vector<int64_t>{0, 2});
  CHECK(kept("bn_scale") == std::vector<int64_t>{2, 3});
  CHECK(kept("fpgm") == std::vector<int64_t>{0, 3});
  CHECK(kept("lamp") == std::vector<int64_t>{0, 1});
  CHECK(kept("taylor") == std::vector<int64_t>{1, 3});
  // random: the seed decides (over a few seeds, more than one pair), each kept pair of size 2.
  std::set<std::vector<int64_t>> pairs;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const auto k = kept("random", seed);
    CHECK(k.size() == 2);
    pairs.insert(k);
  }
  CHECK(pairs.size() > 1);
}
