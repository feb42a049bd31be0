#pragma once
// How zoo models call their layers, so that forward extensions (nn/extension.h: fake quantization,
// observers, batch-norm folding) reach every conv, linear, batch norm, activation and residual add.
//
// Zoo models keep plain torch::nn members (so names and state_dict keys match torchvision) and call
// them through libprune::nn::call(), which runs the layer's extension chain when it has one.
#include "libprune/nn/extension.h"

#include <torch/torch.h>

namespace libprune::nn {

// holder->forward(x), through the layer's extensions when it has any.
template <typename Holder>
torch::Tensor call(Holder& holder, const torch::Tensor& x) {
  if (!detail::extensions_installed()) return holder->forward(x);
  return detail::run_extended(*holder, {x}, [&holder](const std::vector<torch::Tensor>& in) { return holder->forward(in.at(0)); });
}

// The same for a two-input layer (Add).
template <typename Holder>
torch::Tensor call(Holder& holder, const torch::Tensor& a, const torch::Tensor& b) {
  if (!detail::extensions_installed()) return holder->forward(a, b);
  return detail::run_extended(*holder, {a, b}, [&holder](const std::vector<torch::Tensor>& in) {
    return holder->forward(in.at(0), in.at(1));
  });
}

// Runs a Sequential like Sequential::forward, but calls every module (nested Sequentials included)
// through nn::call, so extensions reach layers inside torchvision-style blocks.
torch::Tensor call_sequential(const torch::nn::Sequential& sequential, torch::Tensor x);

// A Sequential with a concrete forward(Tensor), so it can nest inside another Sequential
// (torchvision's Conv2dNormActivation blocks), and which calls its children through nn::call.
// Children are named 0, 1, 2, ... like Python's nn.Sequential.
class ChainImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x);
};
TORCH_MODULE(Chain);

// A residual add as a module of its own (no parameters, so state_dict keys are unchanged), giving
// extensions a place to observe the sum. Call it through nn::call(add, a, b).
class AddImpl : public torch::nn::Module {
 public:
  torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b) { return a + b; }
};
TORCH_MODULE(Add);

}  // namespace libprune::nn
