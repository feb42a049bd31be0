#include "libprune/train/bn_l1_penalty.h"

namespace libprune::train {

void BnL1Penalty::on_after_backward(Trainer& trainer, int64_t, int64_t) {
  torch::NoGradGuard no_grad;
  for (const auto& m : trainer.model()->modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      if (bn->weight.defined() && bn->weight.grad().defined()) bn->weight.grad().add_(bn->weight.sign(), lambda_);
    }
  }
}

}  // namespace libprune::train
