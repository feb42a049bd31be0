#pragma once
// Entry points through which zoo models call their conv, linear, batch-norm and residual-add
// layers, so that QAT can wrap them (fake-quant on weights and activations, observers on adds)
// and deploy-time batch-norm folding can replace them (nn/fold_batchnorm.h).
//
// LibTorch C++ modules have no forward hooks, and replace_module cannot swap a typed member
// (torch::nn::Conv2d conv1) for a wrapper of another type. Zoo models therefore keep plain
// torch::nn members (so names and state_dict keys match torchvision) and call them through
// libprune::nn::call(), which consults a table of wrappers keyed by module. With no wrapper
// installed, the cost is one relaxed atomic load per call.
#include <torch/torch.h>

#include <functional>
#include <vector>

namespace libprune::nn {

// Receives the module, its inputs and the original forward; returns the output. A fake-quant
// wrapper typically quantises the inputs, calls a functional op with a fake-quantised weight,
// and observes the output.
using ForwardFn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;
using ForwardWrapper =
    std::function<torch::Tensor(torch::nn::Module&, const std::vector<torch::Tensor>&, const ForwardFn&)>;

// Installs (or replaces) the wrapper for one module. The module must outlive the wrapper or be
// removed with remove_forward_wrapper().
void set_forward_wrapper(const torch::nn::Module& module, ForwardWrapper wrapper);
void remove_forward_wrapper(const torch::nn::Module& module);
void clear_forward_wrappers();
std::size_t forward_wrapper_count();

namespace detail {
const ForwardWrapper* find_forward_wrapper(const torch::nn::Module& module);
}  // namespace detail

// Calls holder->forward(x), or the installed wrapper around it.
template <typename Holder>
torch::Tensor call(Holder& holder, const torch::Tensor& x) {
  if (const ForwardWrapper* wrapper = detail::find_forward_wrapper(*holder)) {
    return (*wrapper)(*holder, {x}, [&](const std::vector<torch::Tensor>& in) { return holder->forward(in.at(0)); });
  }
  return holder->forward(x);
}

// Runs a Sequential like Sequential::forward, but sends every module (nested Sequentials
// included) through the wrapper table, so QAT can reach convs inside torchvision-style blocks.
torch::Tensor call_sequential(const torch::nn::Sequential& sequential, torch::Tensor x);

// A Sequential with a concrete forward(Tensor), so it can nest inside another Sequential
// (torchvision's Conv2dNormActivation blocks), and which routes its children through the
// wrapper table. Children are named 0, 1, 2, ... like Python's nn.Sequential.
class ChainImpl : public torch::nn::SequentialImpl {
 public:
  using torch::nn::SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x);
};
TORCH_MODULE(Chain);

// A residual add as a module of its own (no parameters, so state_dict keys are unchanged),
// giving QAT a place to observe the sum.
class AddImpl : public torch::nn::Module {
 public:
  torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b);
};
TORCH_MODULE(Add);

}  // namespace libprune::nn
