#pragma once
// Models the quantization tests share.
#include "libprune/libprune.h"

namespace test {

// CIFAR ResNet-20 (3 input channels, 16x16 images) whose batch norms have settled on a few random
// batches, in eval mode.
inline libprune::models::ResNet settled_resnet20(uint64_t seed, int64_t classes = 10) {
  torch::manual_seed(seed);
  auto m = libprune::models::cifar_resnet(20, libprune::models::ModelOptions().num_classes(classes));
  torch::NoGradGuard no_grad;
  m->train();
  for (int i = 0; i < 3; ++i) m->forward(torch::randn({16, 3, 16, 16}) * 0.5 + 0.2);
  m->eval();
  return m;
}

// One pass of `m` on `x`, as prepare, convert and load_int8 take it.
inline libprune::graph::Forward run_on(libprune::models::ResNet& m, const torch::Tensor& x) {
  return [&m, x] { return std::vector<torch::Tensor>{m->forward(x)}; };
}

// Calibration on `calib` (observers watch with rounding off), then the simulated int8 model in eval
// mode: rounding on, observers frozen.
inline void calibrate_on(libprune::models::ResNet& m, const torch::Tensor& calib) {
  torch::NoGradGuard no_grad;
  libprune::quant::calibration_mode(*m);
  m->forward(calib);
  m->eval();
  libprune::quant::enable_fake_quant(*m, true);
  libprune::quant::enable_observers(*m, false);
}

}  // namespace test
