#pragma once
#include <torch/torch.h>

#include <memory>
#include <utility>
#include <vector>

namespace libprune::nn {

// Switches a module and all its submodules to eval for the guard's lifetime, then restores each
// one's own train flag (a frozen BN inside a training model stays frozen).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(torch::nn::Module& module);
  ~EvalModeGuard();
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  // Submodules in pre-order: train() recurses, so parents are restored before their children.
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> flags_;
  torch::nn::Module& root_;
  bool root_flag_;
};

}  // namespace libprune::nn
