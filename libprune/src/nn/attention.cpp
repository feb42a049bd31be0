#include "libprune/nn/attention.h"

#include "libprune/nn/call.h"

#include <cmath>

namespace libprune::nn {

MultiheadSelfAttentionOptions::MultiheadSelfAttentionOptions(int64_t embed_dim, int64_t num_heads)
    : embed_dim_(embed_dim), num_heads_(num_heads), head_dim_(num_heads > 0 ? embed_dim / num_heads : 0) {
  TORCH_CHECK_VALUE(num_heads > 0 && embed_dim > 0 && embed_dim % num_heads == 0, "MultiheadSelfAttention: embed_dim (",
                    embed_dim, ") must be a positive multiple of num_heads (", num_heads,
                    "). Fix: pick num_heads that divides embed_dim");
}

MultiheadSelfAttentionImpl::MultiheadSelfAttentionImpl(MultiheadSelfAttentionOptions o) : options(std::move(o)) {
  const int64_t inner = options.num_heads() * options.head_dim();
  auto linear = [&](int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(options.bias())); };
  q_proj = register_module("q_proj", linear(options.embed_dim(), inner));
  k_proj = register_module("k_proj", linear(options.embed_dim(), inner));
  v_proj = register_module("v_proj", linear(options.embed_dim(), inner));
  out_proj = register_module("out_proj", linear(inner, options.embed_dim()));
}

torch::Tensor MultiheadSelfAttentionImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 3, "MultiheadSelfAttention expects [batch, tokens, embed_dim], got ", x.sizes());
  const int64_t b = x.size(0), t = x.size(1), h = options.num_heads(), d = options.head_dim();
  auto heads = [&](const torch::Tensor& y) { return y.view({b, t, h, d}).transpose(1, 2); };
  const auto q = heads(call(q_proj, x));
  const auto k = heads(call(k_proj, x));
  const auto v = heads(call(v_proj, x));
  const auto attn = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d)), -1);
  const auto ctx = torch::matmul(attn, v).transpose(1, 2).reshape({b, t, h * d});
  return call(out_proj, ctx);
}

}  // namespace libprune::nn
