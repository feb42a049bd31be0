#include "libprune/models/init.h"

namespace libprune::models {

void init_like_torchvision(torch::nn::Module& model, double linear_std) {
  torch::NoGradGuard no_grad;
  for (auto& m : model.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    } else if (auto* linear = m->as<torch::nn::Linear>(); linear && linear_std > 0) {
      linear->weight.normal_(0, linear_std);
      linear->bias.zero_();
    }
  }
}

}  // namespace libprune::models
