#pragma once
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

namespace libprune::nn {

// Puts the default CPU generator back as it was when the guard goes (also when an exception passes):
// work done on the side (building a model draws its initial weights, dropout draws masks) must not
// move the random stream a run shares with an unbroken or differently reported one.
class RandomStreamGuard {
 public:
  RandomStreamGuard() : state_(at::detail::getDefaultCPUGenerator().get_state()) {}
  ~RandomStreamGuard() {
    auto generator = at::detail::getDefaultCPUGenerator();  // a handle to the one generator
    generator.set_state(state_);
  }
  RandomStreamGuard(const RandomStreamGuard&) = delete;
  RandomStreamGuard& operator=(const RandomStreamGuard&) = delete;

 private:
  at::Tensor state_;
};

}  // namespace libprune::nn
