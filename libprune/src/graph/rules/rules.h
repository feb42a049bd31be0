#pragma once
// The built-in op rules, one family per file; op_rules.cpp registers them all.
#include "libprune/graph/op_rules.h"

#include <functional>
#include <string>

namespace libprune::graph::rules {

using Add = std::function<void(const std::string& op, OpKind kind, const OpRule& rule)>;

void add_conv_linear(const Add& add);       // Convolution, Embedding; linear layers (Addmm, Mm) via dense()
void add_matmul_attention(const Add& add);  // Addmm, Mm, Bmm: linear layers and activation products (heads)
void add_norm_pool(const Add& add);         // batch, layer and group norm; pooling and means
void add_elementwise(const Add& add);       // add, mul, activations, softmax, dropout, fake quantization
void add_view_permute(const Add& add);      // view, reshape, flatten, permute, transpose, expand, slice, select
void add_concat_split(const Add& add);      // cat, split, chunk, unbind

// A layer whose weight maps `n_in` input channels (weight dim `in_dim`) to `n_out` fresh output
// channels (the other of dims 0 and 1), with an optional bias along the outputs. Inputs the
// tracer cannot follow get pinned elements of their own.
void dense(RuleContext& c, int i, const Space& x, bool x_ok, const std::string& weight, int64_t in_dim,
           const std::string& bias, int64_t n_in, int64_t n_out);

// A dim index made non-negative against `rank` dims (-1 is the last).
inline int64_t wrap_dim(int64_t d, size_t rank) { return d < 0 ? d + static_cast<int64_t>(rank) : d; }
// The op's "dim" attribute made non-negative against an input of shape `in`.
inline int64_t wrapped_dim(const TracedNode& n, const Shape& in) { return wrap_dim(n.attr("dim"), in.size()); }

// Registers `rule` for every op in `ops` with `kind`.
void add_all(const Add& add, std::initializer_list<const char*> ops, OpKind kind, const OpRule& rule);

}  // namespace libprune::graph::rules
