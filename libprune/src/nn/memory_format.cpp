#include "libprune/nn/memory_format.h"

namespace libprune::nn {

void to_memory_format(torch::nn::Module& module, torch::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  auto convert = [format](torch::Tensor& t) {
    if (t.defined() && t.dim() == 4 && !t.is_contiguous(format)) t.set_data(t.contiguous(format));
  };
  for (auto& p : module.parameters(true)) convert(p);
  for (auto& b : module.buffers(true)) convert(b);
}

}  // namespace libprune::nn
