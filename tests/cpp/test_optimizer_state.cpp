// A cut keeps each parameter's optimizer state by value: the kept rows (and columns) of SGD's momentum,
// Adam's and AdamW's moments and of .grad are the originals at the kept indices, in their dtype.
#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

namespace {

// The tensors an optimizer keeps for one parameter, by kind.
std::vector<torch::Tensor> state_of(torch::optim::Optimizer& opt, const torch::Tensor& p) {
  auto& s = *opt.state().at(c10::guts::to_string(p.unsafeGetTensorImpl()));
  if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(&s)) return {sgd->momentum_buffer()};
  if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(&s)) return {adam->exp_avg(), adam->exp_avg_sq()};
  auto& adamw = dynamic_cast<torch::optim::AdamWParamState&>(s);
  return {adamw.exp_avg(), adamw.exp_avg_sq()};
}

// `t` as the plan leaves it: each of its cuts applied by index.
torch::Tensor cut(torch::Tensor t, const layers::PruningPlan& plan, const std::string& name) {
  for (const auto& c : plan.cuts) {
    if (c.tensor == name) t = t.index_select(c.dim, torch::tensor(c.keep, torch::kLong));
  }
  return t;
}

void check_optimizer(const std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::Tensor>)>& make) {
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10).in_channels(1));
  const auto x = torch::randn({16, 1, 16, 16});
  const auto y = torch::randint(10, {16}, torch::kLong);
  auto opt = make(m->parameters());
  m->train();
  for (int s = 0; s < 3; ++s) {
    opt->zero_grad();
    torch::cross_entropy_loss(m->forward(x), y).backward();
    opt->step();
  }
  std::map<std::string, std::vector<torch::Tensor>> before;
  std::map<std::string, torch::Tensor> grads;
  for (const auto& p : m->named_parameters()) {
    for (const auto& t : state_of(*opt, p.value())) before[p.key()].push_back(t.clone());
    grads[p.key()] = p.value().grad().clone();
  }
  const auto fwd = [m, x]() mutable { return std::vector<torch::Tensor>{m->forward(x.slice(0, 0, 2))}; };
  const auto plan = prune::Pruner(m.ptr(), fwd, prune::PrunerOptions().ratio(0.5).ignored_layers({"fc"})).step(opt.get());
  REQUIRE(!plan.empty());
  int changed = 0;
  for (const auto& p : m->named_parameters()) {
    INFO(p.key());
    const auto now = state_of(*opt, p.value());
    REQUIRE(now.size() == before[p.key()].size());
    for (size_t k = 0; k < now.size(); ++k) {
      CHECK(now[k].dtype() == before[p.key()][k].dtype());
      CHECK(torch::equal(now[k], cut(before[p.key()][k], plan, p.key())));
    }
    CHECK(torch::equal(p.value().grad(), cut(grads[p.key()], plan, p.key())));
    changed += p.value().sizes() != before[p.key()][0].sizes();
  }
  CHECK(changed > 20);  // most tensors were cut
}

}  // namespace

TEST_CASE("optimizer state: a cut keeps SGD momentum, Adam and AdamW moments and .grad by value", "[prune]") {
  SECTION("sgd") {
    check_optimizer([](std::vector<torch::Tensor> ps) {
      return std::make_unique<torch::optim::SGD>(ps, torch::optim::SGDOptions(0.05).momentum(0.9));
    });
  }
  SECTION("adam") {
    check_optimizer([](std::vector<torch::Tensor> ps) {
      return std::make_unique<torch::optim::Adam>(ps, torch::optim::AdamOptions(1e-3));
    });
  }
  SECTION("adamw") {
    check_optimizer([](std::vector<torch::Tensor> ps) {
      return std::make_unique<torch::optim::AdamW>(ps, torch::optim::AdamWOptions(1e-3).weight_decay(0.01));
    });
  }
}
