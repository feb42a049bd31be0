#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

namespace {

// Counts its calls and passes them on; records its name in a shared log when given one.
struct Counter : nn::ExtensionImpl {
  int calls = 0;
  std::vector<std::string>* log = nullptr;
  std::string name;
  torch::Tensor forward(torch::nn::Module&, const std::vector<torch::Tensor>& in, const nn::Forward& next) override {
    ++calls;
    if (log) log->push_back(name);
    return next(in);
  }
};

// A learnable scale per output channel on the weight (what a learnable fake-quantisation step size
// looks like to the engine): weight -> weight * scale, with `scale` a parameter of the layer.
struct ChannelScale : nn::ExtensionImpl {
  torch::Tensor scale;
  explicit ChannelScale(int64_t channels) { scale = register_parameter("scale", torch::ones({channels})); }
  std::vector<std::string> transformed() const override { return {"weight"}; }
  torch::Tensor transform(torch::nn::Module&, const std::string&, const torch::Tensor& w) override {
    return w * scale.view({-1, 1, 1, 1});
  }
  std::vector<nn::ChannelTie> channel_ties() const override { return {{"scale", 0, "weight", 0}}; }
};

// An observer: the running maximum of |output| per output channel, in a buffer.
struct OutputRange : nn::ExtensionImpl {
  torch::Tensor max_abs;
  explicit OutputRange(int64_t channels) { max_abs = register_buffer("max_abs", torch::zeros({channels})); }
  torch::Tensor forward(torch::nn::Module&, const std::vector<torch::Tensor>& in, const nn::Forward& next) override {
    auto out = next(in);
    torch::NoGradGuard no_grad;
    max_abs.copy_(torch::maximum(max_abs, out.detach().abs().amax({0, 2, 3})));
    return out;
  }
  std::vector<nn::ChannelTie> channel_ties() const override { return {{"max_abs", 0, "weight", 0}}; }
};

// Multiplies the weight by `factor`, to see transforms compose in order.
struct Affine : nn::ExtensionImpl {
  double factor, offset;
  Affine(double factor, double offset) : factor(factor), offset(offset) {}
  std::vector<std::string> transformed() const override { return {"weight"}; }
  torch::Tensor transform(torch::nn::Module&, const std::string&, const torch::Tensor& w) override {
    return w * factor + offset;
  }
};

std::shared_ptr<Counter> counter(std::vector<std::string>* log = nullptr, std::string name = {}) {
  auto c = std::make_shared<Counter>();
  c->log = log;
  c->name = std::move(name);
  return c;
}

}  // namespace

TEST_CASE("extensions reach convs, linears, ReLUs and residual adds of the zoo, in a Sequential too", "[extensions]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  m->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({1, 3, 32, 32});
  const auto reference = m->forward(x);
  auto block = m->stages[1]->ptr<models::BasicBlockImpl>(0);
  std::vector<std::pair<torch::nn::Module*, std::shared_ptr<Counter>>> points{
      {block->downsample->ptr(0).get(), counter()},  // a conv inside a projection Sequential
      {block->add.get(), counter()},                 // a residual add
      {block->relu1.get(), counter()},               // the ReLU after bn1
      {block->relu2.get(), counter()},               // the ReLU after the add
      {m->relu.get(), counter()},                    // the stem's ReLU
      {m->fc.get(), counter()}};                     // the classifier
  for (auto& [module, c] : points) nn::install(*module, "count", c);
  CHECK(torch::equal(m->forward(x), reference));
  for (auto& [module, c] : points) CHECK(c->calls == 1);
  for (auto& [module, c] : points) nn::remove(*module, "count");
  CHECK(torch::equal(m->forward(x), reference));
  for (auto& [module, c] : points) CHECK(c->calls == 1);  // removed: no more calls

  // MobileNetV2: the depthwise conv inside a nested Conv2dNormActivation, and a residual add.
  auto mb = models::mobilenet_v2(models::ModelOptions().num_classes(5));
  mb->eval();
  auto inverted = mb->features->ptr<models::InvertedResidualImpl>(3);
  REQUIRE(inverted->use_res_connect);
  auto dw = inverted->conv->ptr(1)->children().at(0);
  REQUIRE(dw->as<torch::nn::Conv2d>()->options.groups() == dw->as<torch::nn::Conv2d>()->options.in_channels());
  auto dw_count = counter(), add_count = counter();
  nn::install(*dw, "count", dw_count);
  nn::install(*inverted->add, "count", add_count);
  mb->forward(torch::randn({1, 3, 32, 32}));
  CHECK(dw_count->calls == 1);
  CHECK(add_count->calls == 1);
}

TEST_CASE("extensions compose in order: forwards outermost first, transforms first to last", "[extensions]") {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(2, 3, 1).bias(false));
  auto x = torch::randn({1, 2, 4, 4});
  const auto plain = conv->forward(x);
  std::vector<std::string> log;
  nn::install(*conv, "a", counter(&log, "a"));
  nn::install(*conv, "b", counter(&log, "b"));
  nn::install(*conv, "first", counter(&log, "first"), /*first=*/true);
  nn::call(conv, x);
  CHECK(log == std::vector<std::string>{"first", "a", "b"});
  // (w * 2 + 1) * 3 against (w * 3) * 2 + 1: the order shows in the output.
  nn::install(*conv, "double_plus_one", std::make_shared<Affine>(2.0, 1.0));
  nn::install(*conv, "triple", std::make_shared<Affine>(3.0, 0.0));
  const auto w = conv->weight.detach();
  const auto expected = torch::conv2d(x, (w * 2 + 1) * 3);
  CHECK(torch::allclose(nn::call(conv, x), expected, 1e-5, 1e-5));
  // Outside nn::call, and after the call, the layer's own weight is untouched.
  CHECK(torch::equal(conv->weight, w));
  CHECK(torch::allclose(conv->forward(x), plain));
}

TEST_CASE("extension state is the layer's: state_dict, optimizer, checkpoints and pruning see it", "[extensions]") {
  test::TempDir dir("extensions");
  auto make = [] {
    torch::manual_seed(0);
    auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
    nn::install(*m->conv1, "weight_scale", std::make_shared<ChannelScale>(16));
    nn::install(*m->conv1, "output_range", std::make_shared<OutputRange>(16));
    return m;
  };
  auto m = make();
  auto x = torch::randn({4, 3, 32, 32});
  auto y = torch::randint(10, {4}, torch::kLong);
  const auto sd = io::state_dict(*m);
  REQUIRE(sd.count("conv1.weight_scale.scale"));
  REQUIRE(sd.count("conv1.output_range.max_abs"));
  CHECK(m->named_parameters().contains("conv1.weight_scale.scale"));

  // A training step: the learnable scale is in the optimizer and moves; the observer records.
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto scale = m->named_parameters()["conv1.weight_scale.scale"];
  m->train();
  opt.zero_grad();
  torch::nn::functional::cross_entropy(m->forward(x), y).backward();
  REQUIRE(scale.grad().defined());
  opt.step();
  CHECK_FALSE(torch::equal(scale, torch::ones({16})));
  const auto observed = m->named_buffers()["conv1.output_range.max_abs"].clone();
  CHECK(observed.min().item<float>() > 0);

  // The state round-trips through a file into a fresh model with the same extensions.
  io::save_state_dict(*m, dir.file("m.pt"));
  auto fresh = make();
  io::load_state_dict(*fresh, dir.file("m.pt"));
  CHECK(torch::equal(fresh->named_parameters()["conv1.weight_scale.scale"], scale));
  CHECK(torch::equal(fresh->named_buffers()["conv1.output_range.max_abs"], observed));

  // Pruning with the extensions installed: their per-channel state is cut with the conv's channels,
  // and the optimizer's momentum for the scale too.
  const auto scale_before = scale.detach().clone();
  prune::Pruner pruner(m.ptr(), [&] { return std::vector<torch::Tensor>{m->forward(x.slice(0, 0, 1))}; },
                       prune::PrunerOptions().ratio(0.5).ignored_layers({"fc"}).round_to(8));
  const auto plan = pruner.step(&opt);
  REQUIRE(m->conv1->weight.size(0) == 8);
  CHECK(scale.size(0) == 8);
  CHECK(m->named_buffers()["conv1.output_range.max_abs"].size(0) == 8);
  std::vector<int64_t> kept;
  for (const auto& c : plan.cuts) {
    if (c.tensor == "conv1.weight" && c.dim == 0) kept = c.keep;
  }
  REQUIRE(kept.size() == 8);
  CHECK(torch::equal(scale.detach(), scale_before.index_select(0, torch::tensor(kept))));
  auto& state = opt.state().at(c10::guts::to_string(scale.unsafeGetTensorImpl()));
  CHECK(static_cast<torch::optim::SGDParamState&>(*state).momentum_buffer().sizes() == scale.sizes());
  m->train();
  opt.zero_grad();
  torch::nn::functional::cross_entropy(m->forward(x), y).backward();
  opt.step();  // training goes on with the pruned extension state

  // Removing an extension removes its state.
  nn::remove(*m->conv1, "output_range");
  CHECK_FALSE(io::state_dict(*m).count("conv1.output_range.max_abs"));
}

TEST_CASE("batch-norm folding composes with a weight extension on the same conv", "[extensions]") {
  torch::manual_seed(0);
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  auto scale = std::make_shared<ChannelScale>(16);
  {
    torch::NoGradGuard no_grad;
    scale->scale.uniform_(0.5, 1.5);
    m->bn1->running_mean.uniform_(-0.5, 0.5);
    m->bn1->running_var.uniform_(0.5, 2.0);
  }
  nn::install(*m->conv1, "weight_scale", scale);
  m->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 32, 32});
  const auto reference = m->forward(x);  // scaled weight, then the batch norm
  measure::BatchNormFolding folding(*m, [&] { return std::vector<torch::Tensor>{m->forward(x)}; });
  CHECK(folding.folded().size() == 21);
  const auto chain = nn::extensions(*m->conv1);
  REQUIRE(chain.size() == 2);
  CHECK(chain[0].first == nn::kFoldedBatchNorm);  // fold first, then the scale
  CHECK(torch::allclose(m->forward(x), reference, 1e-4, 1e-4));
}

TEST_CASE("extensions: installed twice, removed when absent, or on the wrong layer: clear errors, nothing changed",
          "[extensions]") {
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(2, 3, 1));
  torch::nn::BatchNorm2d bn(3);
  nn::install(*conv, "scale", std::make_shared<ChannelScale>(3));
  const auto before = test::snapshot(*conv);
  CHECK_THAT(test::message_of([&] { nn::install(*conv, "scale", std::make_shared<ChannelScale>(3)); }),
             Catch::Contains("already has an extension named \"scale\"") && Catch::Contains("Fix:"));
  CHECK_THAT(test::message_of([&] { nn::remove(*conv, "observer"); }),
             Catch::Contains("has no extension named \"observer\"") && Catch::Contains("installed: scale"));
  CHECK_THAT(test::message_of([&] { nn::install(*bn, "scale", std::make_shared<ChannelScale>(3)); }),
             Catch::Contains("transforms 'weight'") && Catch::Contains("cannot take in place"));
  auto shared = nn::extensions(*conv)[0].second;
  CHECK_THAT(test::message_of([&] { nn::install(*conv, "again", shared); }), Catch::Contains("already installed"));
  CHECK_THAT(test::message_of([&] { nn::install(*conv, "a.b", std::make_shared<ChannelScale>(3)); }),
             Catch::Contains("not a valid extension name"));
  CHECK_THAT(test::message_of([&] { nn::install(*conv, "x", nullptr); }), Catch::Contains("is null"));
  CHECK(nn::extensions(*conv).size() == 1);
  CHECK(nn::extensions(*bn).empty());
  CHECK(test::same(before, test::snapshot(*conv)));
}
