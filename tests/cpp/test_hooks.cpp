#include "helpers.h"
#include "libprune/libprune.h"

using namespace libprune;

TEST_CASE("forward wrappers reach convs, linears and residual adds (QAT entry points)", "[hooks]") {
  auto m = models::cifar_resnet(20, models::ModelOptions().num_classes(10));
  m->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({1, 3, 32, 32});
  const auto reference = m->forward(x);

  int conv_calls = 0, add_calls = 0, linear_calls = 0;
  auto counting = [](int& counter) {
    return [&counter](torch::nn::Module&, const std::vector<torch::Tensor>& in, const nn::ForwardFn& next) {
      ++counter;
      return next(in);
    };
  };
  // A conv inside a projection Sequential, a block's residual add, and the classifier.
  auto block = m->stages[1]->ptr<models::BasicBlockImpl>(0);
  nn::set_forward_wrapper(*block->downsample->ptr(0), counting(conv_calls));
  nn::set_forward_wrapper(*block->add, counting(add_calls));
  nn::set_forward_wrapper(*m->fc, counting(linear_calls));
  CHECK(nn::forward_wrapper_count() == 3);
  CHECK(torch::equal(m->forward(x), reference));
  CHECK(conv_calls == 1);
  CHECK(add_calls == 1);
  CHECK(linear_calls == 1);

  // A wrapper can change the computation: zeroing the classifier input zeroes the logits but the bias.
  nn::set_forward_wrapper(*m->fc, [](torch::nn::Module&, const std::vector<torch::Tensor>& in,
                                     const nn::ForwardFn& next) { return next({in[0] * 0}); });
  CHECK(torch::allclose(m->forward(x)[0], m->fc->bias));
  nn::clear_forward_wrappers();
  CHECK(nn::forward_wrapper_count() == 0);
  CHECK(torch::equal(m->forward(x), reference));
}

TEST_CASE("MobileNetV2 and VGG route nested blocks through the wrappers", "[hooks]") {
  auto mb = models::mobilenet_v2(models::ModelOptions().num_classes(5));
  mb->eval();
  torch::NoGradGuard no_grad;
  int calls = 0;
  // features.2.conv.1.0: the depthwise conv inside a nested Conv2dNormActivation.
  auto block = mb->features->ptr<models::InvertedResidualImpl>(2);
  auto dw = block->conv->ptr(1)->children().at(0);
  REQUIRE(dw->as<torch::nn::Conv2d>() != nullptr);
  CHECK(dw->as<torch::nn::Conv2d>()->options.groups() == dw->as<torch::nn::Conv2d>()->options.in_channels());
  nn::set_forward_wrapper(*dw, [&calls](torch::nn::Module&, const std::vector<torch::Tensor>& in,
                                        const nn::ForwardFn& next) {
    ++calls;
    return next(in);
  });
  mb->forward(torch::randn({1, 3, 32, 32}));
  nn::clear_forward_wrappers();
  CHECK(calls == 1);
  CHECK_THROWS_WITH(nn::set_forward_wrapper(*dw, nullptr), Catch::Contains("empty"));
}
