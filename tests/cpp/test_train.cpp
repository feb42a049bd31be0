#include "helpers.h"
#include "libprune/importance/importance.h"
#include "libprune/libprune.h"
#include "libprune/schedule/schedule.h"

#include <cmath>
#include <sstream>

using namespace libprune;
using importance::ImportanceOptions;
using importance::Reduction;

namespace {

graph::Group group_of(std::vector<graph::Member> members, int64_t units) {
  graph::Group g;
  g.members = std::move(members);
  for (int64_t u = 0; u < units; ++u) g.add_unit(std::vector<std::vector<int64_t>>(g.members.size(), {u}));
  return g;
}

}  // namespace

TEST_CASE("criteria: each one worked by hand on a tiny layer", "[train]") {
  auto w = torch::tensor({{1.0, -2.0}, {3.0, 0.0}, {0.5, 0.5}});
  std::map<std::string, torch::Tensor> params{{"fc.weight", w}};
  const auto g = group_of({{"fc.weight", 0}}, 3);
  auto near = [](const std::vector<double>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(b[i]).epsilon(1e-9));
  };
  near(importance::score(g, params, ImportanceOptions("l1")), {3, 3, 1});
  near(importance::score(g, params, ImportanceOptions("l2")), {std::sqrt(5.0), 3, std::sqrt(0.5)});
  // FPGM: each filter's summed distance to the others.
  const double d01 = std::sqrt(8.0), d02 = std::sqrt(6.5), d12 = std::sqrt(6.5);
  near(importance::score(g, params, ImportanceOptions("fpgm")), {d01 + d02, d01 + d12, d02 + d12});
  // LAMP: squared norms 5, 9, 0.5 over the sum of those at least as large.
  near(importance::score(g, params, ImportanceOptions("lamp")), {5.0 / 14.0, 1.0, 0.5 / 14.5});
  // Taylor from the current gradient: sum |w * g| per filter.
  w.mutable_grad() = torch::tensor({{1.0, 1.0}, {0.0, 1.0}, {2.0, 2.0}});
  near(importance::score(g, params, ImportanceOptions("taylor")), {3, 0, 2});
  importance::Gradients acc;
  importance::accumulate_taylor({{"fc.weight", w}}, acc);
  importance::accumulate_taylor({{"fc.weight", w}}, acc);
  near(importance::score(g, params, ImportanceOptions("taylor"), &acc), {6, 0, 4});
  // BN scale: |gamma|; a group without a norm scale falls back to L1.
  std::map<std::string, torch::Tensor> with_bn{{"fc.weight", w}, {"bn.weight", torch::tensor({0.5, -2.0, 1.0})}};
  near(importance::score(group_of({{"bn.weight", 0}, {"fc.weight", 0}}, 3), with_bn, ImportanceOptions("bn_scale")), {0.5, 2, 1});
  near(importance::score(g, params, ImportanceOptions("bn_scale")), {3, 3, 1});
  // Random: seeded.
  const auto r1 = importance::score(g, params, ImportanceOptions("random").seed(1));
  CHECK(r1 == importance::score(g, params, ImportanceOptions("random").seed(1)));
  CHECK(r1 != importance::score(g, params, ImportanceOptions("random").seed(2)));
  // Reductions across members: fc rows give 3, 3, 1 and next.weight columns give 1, 2, 3.
  std::map<std::string, torch::Tensor> two{{"fc.weight", w}, {"next.weight", torch::tensor({{1.0, -2.0, 3.0}})}};
  const auto g2 = group_of({{"fc.weight", 0}, {"next.weight", 1}}, 3);
  near(importance::score(g2, two, ImportanceOptions("l1")), {4, 5, 4});
  near(importance::score(g2, two, ImportanceOptions("l1").reduction(Reduction::Mean)), {2, 2.5, 2});
  near(importance::score(g2, two, ImportanceOptions("l1").reduction(Reduction::Max)), {3, 3, 3});
  near(importance::score(g2, two, ImportanceOptions("l1").reduction(Reduction::First)), {3, 3, 1});
  near(importance::score(g2, two, ImportanceOptions("l1").normalize(true)), {4.0 / 13, 5.0 / 13, 4.0 / 13});
  // Bad input.
  CHECK_THAT(test::message_of([&] { importance::score(g, params, ImportanceOptions("l3")); }),
             Catch::Contains("bn_scale, taylor, fpgm, lamp, random"));
  CHECK_THAT(test::message_of([] { options::parse<Reduction>("median"); }), Catch::Contains("sum, mean, max, first"));
  auto no_grad = torch::ones({3, 2});
  CHECK_THAT(test::message_of([&] { importance::score(g, {{"fc.weight", no_grad}}, ImportanceOptions("taylor")); }),
             Catch::Contains("fc.weight") && Catch::Contains("backward"));
}

TEST_CASE("criteria: mask_grad is |dL/d gate| of a gate on each unit, absolute per batch", "[train]") {
  // conv (1 -> 2 channels, 1x1) on 2x2 images, flattened into fc (8 -> 3): channel c is read by fc's
  // columns 4c..4c+3, so a unit spans four columns. The reference puts an explicit gate xi on each
  // channel and sums |dL/dxi| over batches; mask_grad must find it from w * dL/dw alone.
  torch::manual_seed(3);
  auto conv_w = torch::randn({2, 1, 1, 1}, torch::kFloat64).requires_grad_();
  auto fc_w = torch::randn({3, 8}, torch::kFloat64).requires_grad_();
  graph::Group g;
  g.members = {{"conv.weight", 0}, {"fc.weight", 1}};
  g.add_unit({{0}, {0, 1, 2, 3}});
  g.add_unit({{1}, {4, 5, 6, 7}});
  std::map<std::string, torch::Tensor> params{{"conv.weight", conv_w}, {"fc.weight", fc_w}};
  auto loss_of = [&](const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& gate) {
    auto h = torch::relu(torch::conv2d(x, conv_w)) * gate.view({1, 2, 1, 1});
    return torch::nn::functional::cross_entropy(torch::matmul(h.flatten(1), fc_w.t()), y);
  };
  importance::Gradients acc;
  std::vector<double> reference(2, 0.0);
  for (int b = 0; b < 3; ++b) {
    const auto x = torch::randn({4, 1, 2, 2}, torch::kFloat64), y = torch::randint(3, {4});
    auto gate = torch::ones({2}, torch::kFloat64).requires_grad_();
    const auto gate_grad = torch::autograd::grad({loss_of(x, y, gate)}, {gate})[0];
    for (int u = 0; u < 2; ++u) reference[static_cast<size_t>(u)] += std::abs(gate_grad[u].item<double>());
    conv_w.mutable_grad() = torch::Tensor();
    fc_w.mutable_grad() = torch::Tensor();
    loss_of(x, y, torch::ones({2}, torch::kFloat64)).backward();
    importance::accumulate("mask_grad", {{"conv.weight", conv_w}, {"fc.weight", fc_w}}, acc);
  }
  CHECK(acc.at("fc.weight@1").sizes() == torch::IntArrayRef{3, 8});
  const auto scores = importance::score(g, params, ImportanceOptions("mask_grad"), &acc);
  REQUIRE(scores.size() == 2);
  for (size_t u = 0; u < 2; ++u) CHECK(scores[u] == Approx(reference[u]).epsilon(1e-9));
  // One batch from the current .grad (the last one) when nothing was accumulated.
  const auto one = importance::score(g, params, ImportanceOptions("mask_grad"));
  const auto last = acc.at("fc.weight@1")[2];
  CHECK(one[0] == Approx(std::abs(last.narrow(0, 0, 4).sum().item<double>())).epsilon(1e-9));
  CHECK(importance::accumulates("mask_grad"));
  CHECK_FALSE(importance::accumulates("l1"));
  CHECK_THAT(test::message_of([&] { importance::accumulate("l1", {}, acc); }), Catch::Contains("taylor or mask_grad"));
  auto no_grad = torch::ones({3, 8}, torch::kFloat64);
  CHECK_THAT(test::message_of([&] {
               importance::score(g, {{"conv.weight", torch::ones({2, 1, 1, 1})}, {"fc.weight", no_grad}},
                                 ImportanceOptions("mask_grad"));
             }),
             Catch::Contains("mask_grad") && Catch::Contains("backward"));
}

TEST_CASE("macro-F1 worked by hand; a class that never occurs is left out", "[train]") {
  // Rows true, columns predicted. Class 0: TP 3, FN 1, FP 1 -> 6/8; class 1: TP 2, FP 1 -> 4/5;
  // class 2: one example, never predicted -> 0; class 3: neither a label nor a prediction -> left out.
  const auto c = torch::tensor({3, 1, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, torch::kLong).view({4, 4});
  CHECK(train::macro_f1(c) == Approx(100.0 * (0.75 + 0.8 + 0.0) / 3.0));
  CHECK(train::macro_f1(torch::zeros({3, 3}, torch::kLong)) == 0.0);
  CHECK_THAT(test::message_of([] { train::macro_f1(torch::zeros({2, 3})); }), Catch::Contains("square"));
}

TEST_CASE("schedules: AGP cubic, iterative and one-shot ratios by epoch", "[train]") {
  using schedule::Schedule;
  using schedule::ScheduleKind;
  using schedule::ScheduleOptions;
  Schedule agp(ScheduleOptions().kind(ScheduleKind::Agp).ratio(0.5).start_epoch(2).end_epoch(6));
  CHECK_FALSE(agp.prunes_at(2));  // s_i = 0
  CHECK(agp.ratio_at(3) == Approx(0.5 * (1 - std::pow(0.75, 3))));
  CHECK(agp.ratio_at(4) == Approx(0.4375));
  CHECK(agp.ratio_at(5) == Approx(0.5 * (1 - std::pow(0.25, 3))));
  CHECK(agp.ratio_at(6) == Approx(0.5));
  CHECK(agp.ratio_at(20) == Approx(0.5));
  CHECK(agp.steps().size() == 4);
  Schedule it(ScheduleOptions().kind(ScheduleKind::Iterative).ratio(0.6).start_epoch(1).steps(3).frequency(2));
  REQUIRE(it.steps().size() == 3);
  for (size_t k = 0; k < 3; ++k) {
    CHECK(it.steps()[k].first == static_cast<int64_t>(1 + 2 * k));
    CHECK(it.steps()[k].second == Approx(0.2 * static_cast<double>(k + 1)));
  }
  Schedule once(ScheduleOptions().ratio(0.3).start_epoch(4));
  CHECK(once.prunes_at(4));
  CHECK_FALSE(once.prunes_at(3));
  CHECK_THAT(test::message_of([] { Schedule(ScheduleOptions().kind(ScheduleKind::Agp).start_epoch(3).end_epoch(3)); }),
             Catch::Contains("end_epoch") && Catch::Contains("Fix:"));
  CHECK_THAT(test::message_of([] { schedule::parse_schedule("linear"); }), Catch::Contains("one_shot, iterative, agp"));
}

TEST_CASE("schedules: fractional epochs place cuts between batches", "[train]") {
  using schedule::Schedule;
  using schedule::ScheduleKind;
  using schedule::ScheduleOptions;
  Schedule agp(ScheduleOptions().kind(ScheduleKind::Agp).ratio(0.5).start_epoch(4).end_epoch(4.5).frequency(0.125));
  REQUIRE(agp.steps().size() == 4);  // 4.0 has s = 0
  CHECK(agp.steps().front().first == Approx(4.125));
  CHECK(agp.steps().back().first == Approx(4.5));
  CHECK(agp.ratio_at(4.25) == Approx(0.4375));
  CHECK(agp.prunes_at(4.375));
  CHECK_FALSE(agp.prunes_at(4));
  const auto due = agp.steps_between(4.1, 4.25);  // (from, to]
  REQUIRE(due.size() == 2);
  CHECK(due[1].first == Approx(4.25));
  CHECK(agp.steps_between(4.25, 4.3).empty());
  CHECK(agp.next_step_after(4.25) == Approx(4.375));
  CHECK(std::isinf(agp.next_step_after(4.5)));
  CHECK_THAT(test::message_of([] { Schedule(ScheduleOptions().kind(ScheduleKind::Agp).end_epoch(2).frequency(0)); }),
             Catch::Contains("frequency must be > 0") && Catch::Contains("Fix:"));
}

TEST_CASE("pruner: steps toward a ratio reach the one-shot architecture; overrides and max_ratio", "[train]") {
  auto widths = [](models::ModelPtr m) {
    std::vector<int64_t> out;
    for (const auto& p : m->named_parameters()) {
      if (p.value().dim() == 4) out.push_back(p.value().size(0));
    }
    return out;
  };
  auto make = [] {
    torch::manual_seed(0);
    return models::create("cifar_resnet20", models::ModelOptions().num_classes(10).in_channels(1));
  };
  auto x = torch::randn({1, 1, 16, 16});
  auto fwd = [&x](models::ModelPtr m) { return [m, x] { return std::vector<torch::Tensor>{m->forward(x)}; }; };
  auto a = make(), b = make();
  prune::Pruner one(a, fwd(a), prune::PrunerOptions().ratio(0.5).ignored_layers({"fc"}));
  one.step();
  prune::Pruner steps(b, fwd(b), prune::PrunerOptions().ratio(0.25).ignored_layers({"fc"}));
  steps.step();
  steps.set_ratio(0.5);
  steps.step();
  CHECK(widths(a) == widths(b));
  // Per-layer override by regex, and a maximum ratio.
  auto c = make();
  prune::Pruner over(c, fwd(c), prune::PrunerOptions().ratio(0.5).ignored_layers({"fc"}).overrides({{"layer1\\.0\\.conv1", 0.0}}));
  over.step();
  CHECK(c->named_parameters()["layer1.0.conv1.weight"].size(0) == 16);
  CHECK(c->named_parameters()["layer1.1.conv1.weight"].size(0) == 8);
  auto d = make();
  CHECK_THAT(test::message_of([&] { prune::Pruner(d, fwd(d), prune::PrunerOptions().ratio(0.6).max_ratio(0.5)); }),
             Catch::Contains("above max_ratio") && Catch::Contains("Fix:"));
  CHECK_THAT(test::message_of([&] { prune::Pruner(d, fwd(d), prune::PrunerOptions().overrides({{"layer[", 0.2}})); }),
             Catch::Contains("not a valid regex"));
}

TEST_CASE("progress: plain lines (not a terminal) with batches/s, loss, running accuracy and ETA", "[train]") {
  // 16 images, all of class 3: an untrained net's running accuracy is 0% or 100% per batch.
  auto set = std::make_shared<data::TensorDataset>(torch::randn({16, 1, 8, 8}), torch::full({16}, 3, torch::kLong), 10);
  auto model = models::create("cifar_resnet20", models::ModelOptions().num_classes(10).in_channels(1));
  auto run = [&](bool terminal) {
    train::Trainer t(model, set, set, train::TrainOptions().epochs(1).batch_size(2).lr(0.01).threads(1));
    t.add_callback(std::make_shared<train::ProgressCallback>(terminal));
    std::ostringstream out;
    auto* old = std::cout.rdbuf(out.rdbuf());
    const bool ok = t.fit();
    std::cout.rdbuf(old);
    CHECK(ok);
    CHECK(t.running_train_top1() == Approx(t.history().back().train_top1));
    CHECK(t.running_train_loss() == Approx(t.history().back().loss));
    CHECK(t.running_train_loss() > 0);
    return out.str();
  };
  const auto plain = run(false);
  CHECK_THAT(plain, Catch::Contains("epoch 0: 2/8 batches") && Catch::Contains("batch/s, loss ") &&
                        Catch::Contains("train top-1 ") && Catch::Contains("ETA "));
  CHECK_THAT(plain, Catch::Contains("epoch 0: loss ") && Catch::Contains("eval top-1"));
  CHECK(plain.find('\r') == std::string::npos);
  const auto bar = run(true);
  CHECK_THAT(bar, Catch::Contains("\repoch   0 [") && Catch::Contains("8/8") && Catch::Contains("top-1 ") &&
                      Catch::Contains("ETA"));
}

TEST_CASE("trainer: decay_biases_and_norms false spares 1-D parameters weight decay (BERT's no-decay group)", "[train]") {
  auto set = std::make_shared<data::TensorDataset>(torch::randn({4, 1, 8, 8}), torch::zeros({4}, torch::kLong), 10);
  auto model = models::create("cifar_resnet20", models::ModelOptions().num_classes(10).in_channels(1));
  for (const bool decay : {true, false}) {
    for (const auto name : {train::Optimizer::Sgd, train::Optimizer::AdamW}) {
      train::Trainer t(model, set, set, train::TrainOptions().optimizer(name).lr(0.5).weight_decay(0.1).momentum(0)
                                            .decay_biases_and_norms(decay).threads(1));
      const auto before = test::snapshot(*model);
      for (auto& p : model->parameters()) p.mutable_grad() = torch::zeros_like(p);  // decay alone moves them
      t.optimizer().step();
      size_t i = 0, moved_1d = 0, moved_2d = 0;
      for (const auto& p : model->parameters()) {
        const bool moved = !torch::equal(p, before[i++]) ;
        (p.dim() < 2 ? moved_1d : moved_2d) += moved ? 1 : 0;
      }
      CHECK(moved_2d > 0);
      CHECK((moved_1d > 0) == decay);
      CHECK(t.optimizer().param_groups().size() == (decay ? 1u : 2u));
    }
  }
}

TEST_CASE("trainer: LR schedules with warmup and restarts; bad options name the key", "[train]") {
  auto set = std::make_shared<data::TensorDataset>(torch::randn({8, 1, 8, 8}), torch::zeros({8}, torch::kLong), 10);
  auto model = models::create("cifar_resnet20", models::ModelOptions().num_classes(10).in_channels(1));
  auto opts = train::TrainOptions().epochs(9).batch_size(4).lr(0.1).lr_schedule(train::LrSchedule::OneCycle).restarts({5}).restart_scale(0.4).threads(1);
  train::Trainer t(model, set, set, opts);
  CHECK(t.lr_at(0) == Approx(0.1 / 25));
  CHECK(t.lr_at(1.5) == Approx(0.1));  // the peak, 30% into the 5-epoch cycle
  CHECK(t.lr_at(4.999) < 0.001);
  CHECK(t.lr_at(5) == Approx(0.04 / 25));
  CHECK(t.lr_at(6.2) == Approx(0.04));  // 30% into the 4-epoch cycle
  train::Trainer cosine(model, set, set, train::TrainOptions().epochs(10).lr(0.2).lr_schedule(train::LrSchedule::Cosine).warmup_epochs(2).batch_size(4).threads(1));
  CHECK(cosine.lr_at(1) == Approx(0.2 * (1 + 0.5) / 2));  // linear warmup, one batch (of 2) in
  CHECK(cosine.lr_at(6) == Approx(0.1));                   // half-way through the cosine
  train::Trainer step(model, set, set, train::TrainOptions().epochs(10).lr(0.1).lr_schedule(train::LrSchedule::Step).step_size(3).gamma(0.5).batch_size(4).threads(1));
  CHECK(step.lr_at(7) == Approx(0.025));
  // linear (BERT fine-tuning): warmup to the peak, then straight down to 0 at the end.
  train::Trainer linear(model, set, set, train::TrainOptions().epochs(5).lr(0.1).lr_schedule(train::LrSchedule::Linear).warmup_epochs(1).batch_size(4).threads(1));
  CHECK(linear.lr_at(1) == Approx(0.1));
  CHECK(linear.lr_at(3) == Approx(0.05));
  CHECK(linear.lr_at(4.999) < 0.001);
  CHECK_THAT(test::message_of([&] { train::Trainer(model, set, set, train::TrainOptions().lr_schedule(options::parse<train::LrSchedule>("poly"))); }),
             Catch::Contains("constant, step, cosine, one_cycle"));
  CHECK_THAT(test::message_of([&] { train::Trainer(model, set, set, train::TrainOptions().epochs(3).restarts({3})); }),
             Catch::Contains("restarts") && Catch::Contains("Fix:"));
  CHECK_THAT(test::message_of([&] { train::Trainer(model, set, set, train::TrainOptions().optimizer(options::parse<train::Optimizer>("lion"))); }),
             Catch::Contains("sgd, adamw"));
  auto empty = std::make_shared<data::TensorDataset>(torch::randn({0, 1, 8, 8}), torch::zeros({0}, torch::kLong), 10);
  CHECK_THAT(test::message_of([&] { train::Trainer(model, empty, set, train::TrainOptions()); }), Catch::Contains("empty"));
}

// mallinfo2 came with glibc 2.33 (Debian bookworm has 2.36); older C libraries skip the check, and
// so do AddressSanitizer and ThreadSanitizer, whose allocators replace glibc's (scripts/sanitize.sh,
// scripts/tsan.sh; GCC and clang say so differently).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LIBPRUNE_TEST_OWN_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define LIBPRUNE_TEST_OWN_ALLOCATOR 1
#endif
#endif
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)) && !defined(LIBPRUNE_TEST_OWN_ALLOCATOR)
#include <malloc.h>
TEST_CASE("retain_freed_memory: blocks of a few MiB come from the heap and stay there", "[train]") {
  REQUIRE(libprune::retain_freed_memory());
  const auto mapped_before = mallinfo2().hblkhd;
  void* block = std::malloc(size_t{8} << 20);  // an activation-sized block: mmapped under glibc's defaults
  REQUIRE(block != nullptr);
  std::memset(block, 1, size_t{8} << 20);
  CHECK(mallinfo2().hblkhd == mapped_before);
  std::free(block);
  // Not trimmed: the freed block is still the process's, ready for the next step.
  CHECK(mallinfo2().fordblks >= (size_t{8} << 20));
  CHECK(libprune::retain_freed_memory(int64_t{1} << 40));  // clamped to glibc's maximum, not an error
}
#endif
