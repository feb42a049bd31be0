#include "libprune/nn/call.h"

namespace libprune::nn {
namespace {

torch::Tensor run_children(torch::nn::SequentialImpl& sequential, torch::Tensor x) {
  const bool extended = detail::extensions_installed();
  for (auto& child : sequential) {
    const auto module = child.ptr();
    if (auto nested = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(module)) {
      x = run_children(*nested, x);
    } else if (extended) {
      x = detail::run_extended(*module, {x}, [&child](const std::vector<torch::Tensor>& in) { return child.forward(in.at(0)); });
    } else {
      x = child.forward(x);
    }
  }
  return x;
}

}  // namespace

torch::Tensor call_sequential(const torch::nn::Sequential& sequential, torch::Tensor x) {
  return run_children(*sequential.ptr(), std::move(x));
}

torch::Tensor ChainImpl::forward(torch::Tensor x) { return run_children(*this, std::move(x)); }

}  // namespace libprune::nn
