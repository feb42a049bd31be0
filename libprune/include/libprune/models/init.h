#pragma once
#include <torch/torch.h>

namespace libprune::models {

// torchvision's initialisation: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 and bias 0,
// linear layers left at their default. Weights loaded afterwards replace all of it.
// `linear_std` > 0 draws linear weights from N(0, linear_std) with zero bias, as torchvision's VGG and
// MobileNetV2 do (0.01); 0 leaves them at LibTorch's default, as torchvision's ResNet does.
void init_like_torchvision(torch::nn::Module& model, double linear_std = 0.0);

}  // namespace libprune::models
