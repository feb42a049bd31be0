// The sensitivity scan: every point is the metric of the model with only that group cut, and the
// model is as it was afterwards.
#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;
using prune::Pruner;
using prune::PrunerOptions;

namespace {

// conv1 (1 -> 8) -> bn -> relu -> conv2 (8 -> 8) -> bn -> relu -> mean -> fc (8 -> 4).
struct ScanNetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(1, 8, 3).padding(1).bias(false)};
  torch::nn::BatchNorm2d bn1{8};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(8, 8, 3).padding(1).bias(false)};
  torch::nn::BatchNorm2d bn2{8};
  torch::nn::Linear fc{8, 4};
  ScanNetImpl() {
    register_module("conv1", conv1);
    register_module("bn1", bn1);
    register_module("conv2", conv2);
    register_module("bn2", bn2);
    register_module("fc", fc);
    torch::NoGradGuard no_grad;
    for (auto* bn : {&bn1, &bn2}) {  // statistics and affine terms that are not the identity
      (*bn)->weight.uniform_(0.5, 1.5);
      (*bn)->bias.uniform_(-0.5, 0.5);
      (*bn)->running_mean.uniform_(-0.2, 0.2);
      (*bn)->running_var.uniform_(0.5, 2);
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn2(conv2(torch::relu(bn1(conv1(x))))));
    return fc(x.mean({2, 3}));
  }
};
TORCH_MODULE(ScanNet);

// A number that moves with every logit: the logits weighted by fixed random weights, in eval mode.
double scan_metric(ScanNet m, const torch::Tensor& x, const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  m->eval();
  return (m->forward(x) * w).sum().item<double>();
}

ScanNet scan_copy(ScanNet m) {
  ScanNet copy;
  torch::NoGradGuard no_grad;
  auto params = copy->named_parameters();
  for (const auto& p : m->named_parameters()) params[p.key()].copy_(p.value());
  auto buffers = copy->named_buffers();
  for (const auto& b : m->named_buffers()) buffers[b.key()].copy_(b.value());
  return copy;
}

}  // namespace

TEST_CASE("sensitivity scan: each point is the metric of the model with only that group cut; nothing changes",
          "[budget]") {
  torch::manual_seed(0);
  ScanNet m;
  const auto x = torch::randn({6, 1, 8, 8});
  const auto w = torch::randn({6, 4});
  const auto forward = [m, x]() mutable { return std::vector<torch::Tensor>{m->forward(x)}; };
  const auto options = PrunerOptions().importance("l2").ignored_layers({"fc"});
  const auto before = test::snapshot(*m);
  const auto scan = Pruner(m.ptr(), forward, options).sensitivity([&] { return scan_metric(m, x, w); }, {0.25, 0.5});
  CHECK(test::same(before, test::snapshot(*m)));
  CHECK(scan.baseline == Approx(scan_metric(m, x, w)));
  REQUIRE(scan.rows.size() == 2);  // conv1's filters, conv2's filters (fc is ignored)
  for (const auto& row : scan.rows) {
    REQUIRE(row.modules.size() == 2);  // the conv and its batch norm
    CHECK(row.modules[0].rfind("conv", 0) == 0);
    CHECK(row.modules[1].rfind("bn", 0) == 0);
    CHECK(row.size == 8);
    CHECK(row.kept == std::vector<int64_t>{6, 4});
    for (size_t k = 0; k < scan.ratios.size(); ++k) {
      // The same cut made for real on a copy gives the same metric.
      ScanNet copy = scan_copy(m);
      const auto copy_forward = [copy, x]() mutable { return std::vector<torch::Tensor>{copy->forward(x)}; };
      Pruner(copy.ptr(), copy_forward, PrunerOptions(options).ratio(0).overrides({{row.modules[0], scan.ratios[k]}})).step();
      REQUIRE(copy->named_parameters()[row.modules[0] + ".weight"].size(0) == row.kept[k]);
      CHECK(row.metric[k] == Approx(scan_metric(copy, x, w)).epsilon(1e-5));
      CHECK(row.metric[k] != Approx(scan.baseline).epsilon(1e-3));
    }
  }
  CHECK(scan.to_string().find("conv2") != std::string::npos);
  CHECK(scan.to_json().find("\"kept\":[6,4]") != std::string::npos);

  // An evaluation that fails half way leaves every tensor as it was.
  int calls = 0;
  const auto failing = [&] {
    if (++calls == 3) throw std::runtime_error("evaluation failed");
    return scan_metric(m, x, w);
  };
  CHECK(test::message_of([&] { Pruner(m.ptr(), forward, options).sensitivity(failing, {0.5}); }) == "evaluation failed");
  CHECK(test::same(before, test::snapshot(*m)));

  Pruner pruner(m.ptr(), forward, options);
  const auto metric = [&] { return 0.0; };
  CHECK(test::message_of([&] { pruner.sensitivity(metric, {}); }).find("sensitivity ratios is empty") == 0);
  CHECK(test::message_of([&] { pruner.sensitivity(metric, {0.5, 1.0}); })
            .find("sensitivity ratios.1 must be in (0, 1), got 1") == 0);
  CHECK(test::message_of([&] { pruner.sensitivity(nullptr, {0.5}); }).find("no evaluate function") != std::string::npos);
  CHECK(test::same(before, test::snapshot(*m)));
}

TEST_CASE("sensitivity scan: groups a norm normalises across are listed, not scanned", "[budget]") {
  torch::manual_seed(0);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3).padding(1)),
                            torch::nn::GroupNorm(torch::nn::GroupNormOptions(2, 8)), torch::nn::ReLU(),
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 4, 3).padding(1)));
  const auto x = torch::randn({2, 1, 6, 6});
  const auto forward = [net, x]() mutable { return std::vector<torch::Tensor>{net->forward(x)}; };
  const auto scan = Pruner(net.ptr(), forward, PrunerOptions().ignored_layers({"3"})).sensitivity([] { return 1.0; }, {0.5});
  CHECK(scan.rows.empty());  // zeroing a GroupNorm's channels is not what their cut computes
  REQUIRE(scan.skipped.size() == 1);
  CHECK(scan.to_json().find("\"skipped\":[") != std::string::npos);
}

TEST_CASE("allocation sensitivity: a budget cuts where the scan says the metric drops least", "[budget]") {
  torch::manual_seed(0);
  ScanNet m;
  const auto x = torch::randn({6, 1, 8, 8});
  const auto forward = [m, x]() mutable { return std::vector<torch::Tensor>{m->forward(x)}; };
  const auto options = PrunerOptions().importance("l2").ignored_layers({"fc"}).target({{"macs", 0.6}}).allocation(prune::Allocation::sensitivity);
  auto scan = Pruner(m.ptr(), forward, options).sensitivity([] { return 90.0; }, {0.25, 0.5, 0.75});
  REQUIRE(scan.rows.size() == 2);
  CHECK(prune::Sensitivity::from_json(scan.to_json()).to_json() == scan.to_json());
  // Planted curves: one group costs 5, 10 and 20 points at -25/50/75%, the other a tenth of a point.
  const auto kept_with = [&](double conv1_drop, double conv2_drop) {
    auto planted = scan;
    for (auto& row : planted.rows) {
      const double d = row.modules[0] == "conv1" ? conv1_drop : conv2_drop;
      row.metric = {90 - d, 90 - 2 * d, 90 - 4 * d};
    }
    Pruner pruner(m.ptr(), forward, options);
    pruner.set_sensitivity(std::make_shared<prune::Sensitivity>(prune::Sensitivity::from_json(planted.to_json())));
    const auto plan = pruner.plan();
    std::map<std::string, int64_t> kept{{"conv1", 8}, {"conv2", 8}};
    for (const auto& [group, sizes] : plan.groups) {
      for (const auto& row : scan.rows) {
        if (row.group == group) kept[row.modules[0]] = sizes.second;
      }
    }
    CHECK(plan.notes.front().find("allocated by sensitivity: predicted drop") != std::string::npos);
    return kept;
  };
  const auto a = kept_with(5, 0.1), b = kept_with(0.1, 5);
  INFO("conv1 sensitive: conv1 keeps " << a.at("conv1") << ", conv2 " << a.at("conv2") << "; conv2 sensitive: conv1 keeps "
       << b.at("conv1") << ", conv2 " << b.at("conv2"));
  CHECK(a.at("conv1") == 8);
  CHECK(a.at("conv2") < 8);
  CHECK(b.at("conv2") == 8);
  CHECK(b.at("conv1") < 8);
  // The interpolation: 0 at none removed, linear between the scanned points, the last slope beyond,
  // noise (a metric above the baseline) read as no drop.
  prune::Sensitivity curve;
  curve.ratios = {0.25, 0.5, 0.75};
  curve.baseline = 90;
  prune::SensitivityRow row{"g", {"conv1"}, 8, {6, 4, 2}, {89, 88, 86}};
  CHECK(curve.predicted_drop(row, 0) == Approx(0));
  CHECK(curve.predicted_drop(row, 1) == Approx(0.5));
  CHECK(curve.predicted_drop(row, 5) == Approx(3));
  CHECK(curve.predicted_drop(row, 7) == Approx(5));  // 4 + (4 - 2) / 0.25 x 0.125
  row.metric = {91, 88, 86};
  CHECK(curve.predicted_drop(row, 2) == Approx(0));
  // Points in any order; a flat last segment (noise) still rises beyond it at the average slope.
  prune::SensitivityRow unsorted{"g", {"conv1"}, 8, {2, 6, 4}, {86, 89, 88}};
  CHECK(curve.predicted_drop(unsorted, 3) == Approx(1.5));
  prune::SensitivityRow plateau{"g", {"conv1"}, 8, {6, 4, 2}, {89, 87, 87.1}};
  CHECK(curve.predicted_drop(plateau, 6) == Approx(3));
  CHECK(curve.predicted_drop(plateau, 7) == Approx(3.5));  // 3 + 3 / 0.75 x 0.125
  CHECK(test::message_of([&] {
          auto bad = nlohmann::json::parse(scan.to_json());
          bad["rows"][0]["kept"] = {9, 4, 2};
          prune::Sensitivity::from_json(bad.dump());
        }).find("keeps 9 of its 8 units") != std::string::npos);
  // Bad input: no scan, a group the scan does not have, no target.
  CHECK(test::message_of([&] { Pruner(m.ptr(), forward, options).plan(); }).find("allocation sensitivity needs a sensitivity scan") == 0);
  Pruner other(m.ptr(), forward, options);
  auto partial = scan;
  partial.rows.pop_back();
  other.set_sensitivity(std::make_shared<prune::Sensitivity>(partial));
  CHECK(test::message_of([&] { other.plan(); }).find("is not in the sensitivity scan") != std::string::npos);
  auto narrow = scan;  // a scan of a narrower model
  for (auto& r : narrow.rows) r.size = 6, r.kept = {4, 3, 1};
  other.set_sensitivity(std::make_shared<prune::Sensitivity>(narrow));
  CHECK(test::message_of([&] { other.plan(); }).find("has 8 units and the scan saw 6") != std::string::npos);
  CHECK(test::message_of([&] { PrunerOptions(options).target({}).validate(); }).find("there is no target") != std::string::npos);
}
