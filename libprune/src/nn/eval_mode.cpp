#include "libprune/nn/eval_mode.h"

namespace libprune::nn {

EvalModeGuard::EvalModeGuard(torch::nn::Module& module) : root_(module), root_flag_(module.is_training()) {
  for (const auto& m : module.modules(/*include_self=*/false)) flags_.emplace_back(m, m->is_training());
  module.eval();
}

EvalModeGuard::~EvalModeGuard() {
  root_.train(root_flag_);
  // train() recurses, so restore children afterwards, parents before children.
  for (auto& [m, flag] : flags_) m->train(flag);
}

}  // namespace libprune::nn
