#pragma once
// libprune's own multi-head self-attention: q/k/v/out linears with view/transpose/matmul, the
// form the dependency graph follows head by head. The head count lives in the options and the
// head size stays fixed, so pruning whole heads only changes num_heads (the metadata rule in
// layers/metadata.cpp sets it from the cut q_proj).
#include <torch/torch.h>

namespace libprune::nn {

struct MultiheadSelfAttentionOptions {
  MultiheadSelfAttentionOptions(int64_t embed_dim, int64_t num_heads);
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_heads);
  // embed_dim / num_heads at construction; a pruned model keeps it and loses heads.
  TORCH_ARG(int64_t, head_dim);
  TORCH_ARG(bool, bias) = true;
};

class MultiheadSelfAttentionImpl : public torch::nn::Module {
 public:
  MultiheadSelfAttentionImpl(int64_t embed_dim, int64_t num_heads)
      : MultiheadSelfAttentionImpl(MultiheadSelfAttentionOptions(embed_dim, num_heads)) {}
  explicit MultiheadSelfAttentionImpl(MultiheadSelfAttentionOptions options);
  // x: [batch, tokens, embed_dim] -> [batch, tokens, embed_dim].
  torch::Tensor forward(const torch::Tensor& x);

  MultiheadSelfAttentionOptions options;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(MultiheadSelfAttention);

}  // namespace libprune::nn
