#pragma once
#include <torch/torch.h>

namespace libprune::models {

// torchvision's initialisation: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 and bias 0,
// linear layers left at their default. Weights loaded afterwards replace all of it.
void init_like_torchvision(torch::nn::Module& model);

}  // namespace libprune::models
