#pragma once
// Op rules: what each traced op does to channels, in a table keyed by the op's name (the autograd
// node's name without "Backward<N>": "Convolution", "Addmm", "Cat", ...).
//
// The dependency graph (dependency_graph.h) walks a Trace in topological order and calls each node's
// rule. A rule reads its inputs' channel spaces (which elements sit where in each input activation),
// says which elements are the same channel (unite), which tensor dims they index (member), which
// must stay (pin, with a reason), and sets its outputs' spaces. An op with no rule pins the channels
// it touches. Rules never guess: a layout a rule cannot follow is pinned.
//
// The built-in rules live in src/graph/rules/, one file per family (conv and linear, norms and
// pools, elementwise, views and permutes, concat and split, matmul and attention). To support a new
// op: add it to its family's file (or write a rule against RuleContext and register it here), and
// add a test that traces a module using it. An op that behaves like a known one (a custom autograd
// function that is elementwise, say) only needs an alias: register_op_alias("MyGelu", "Gelu"), also
// from Python (libprune.register_op_rule).
#include "libprune/graph/trace.h"

#include <functional>
#include <string>
#include <vector>

namespace libprune::graph {

// The channel elements of one activation: the dims in `dims` (ascending, not necessarily side by
// side: attention heads sit in [batch, heads, tokens, head_dim]), flattened row-major. The same
// element may appear at several positions (a flatten repeats a channel over its spatial block, a
// batch-head merge over the batch). Untracked: the activation carries no prunable channels.
struct Space {
  bool tracked = false;
  std::vector<int64_t> dims;
  std::vector<int64_t> elems;
  bool single() const;                // channels along exactly one dim
  bool at(int64_t d) const;           // single, along dim d
  bool has(int64_t d) const;          // tracked, with dim d among its channel dims
  bool contiguous() const;            // channel dims side by side
  void shift(int64_t by);             // renumber the dims (broadcasting, squeezes)
  static Space along(int64_t dim, std::vector<int64_t> elems);
};

// What a rule may read and do; the dependency graph's builder implements it.
class RuleContext {
 public:
  virtual ~RuleContext() = default;
  virtual const Trace& trace() const = 0;
  const TracedNode& node(int i) const { return trace().nodes()[static_cast<size_t>(i)]; }
  // Input k of node i: its channel space (untracked where the input needs no grad or carries none;
  // valid until the next set()), its shape (empty when unknown), and the named parameter behind it
  // (empty when it is an activation), seen through transposes, expands and per-parameter transforms
  // (fake quantization).
  virtual const Space& input(int i, size_t k) const = 0;
  Shape in_shape(int i, size_t k) const;
  Shape out_shape(int i, size_t slot = 0) const;
  std::string parameter(int i, size_t k, bool* transposed = nullptr) const;
  // "Convolution: <what>", the form of every pin reason.
  std::string why(int i, const std::string& what) const { return node(i).op + ": " + what; }

  // Elements: fresh ones, the same-channel relation, and pins (kept, with the reason).
  virtual std::vector<int64_t> fresh(int64_t n) = 0;
  virtual int64_t find(int64_t element) = 0;
  virtual void unite(int64_t a, int64_t b) = 0;
  void unite(const std::vector<int64_t>& a, const std::vector<int64_t>& b);
  virtual void pin(const std::vector<int64_t>& elements, const std::string& reason) = 0;
  void pin(const Space& s, const std::string& reason);
  void pin_inputs(int i, const std::string& reason);
  // Index j of `tensor` along `dim` is elements[j] (a parameter used twice is one channel).
  virtual void member(const std::string& tensor, int64_t dim, const std::vector<int64_t>& elements) = 0;
  // Sets output `slot` of node i; a space whose size does not match the output shape is pinned.
  virtual void set(int i, Space s, size_t slot = 0) = 0;
  // Channels a normalisation computes its statistics across (LayerNorm over the channels, GroupNorm):
  // cutting one changes the others' values (Group::normalised). With `layer_norm` and a model that
  // multiplies two activations (mark_attention), they are its hidden size (Group::hidden).
  virtual void mark_normalised(const std::vector<int64_t>& elements, bool layer_norm) = 0;
  virtual void mark_attention() = 0;

  // Element maps: a space laid out over a shape (channel dims full, the others 1), holding element
  // ids, for channels that move between several dims (heads, batch-head merges).
  static torch::Tensor element_map(const Space& s, const Shape& shape);
  // The space of a map over a full shape: the channel dims are those along which ids vary, and ids
  // must not vary along any other; untracked otherwise.
  static Space from_map(const torch::Tensor& full);
  void unite_maps(const torch::Tensor& a, const torch::Tensor& b);
  // Makes every id along `dim` one unit (per position of the other dims); returns the map narrowed to one entry there.
  torch::Tensor collapse(const torch::Tensor& map, int64_t dim);
  // Sets output `slot` to the part of input `x` left in `picked` (a map over the input shape with the
  // picked dim gone or narrowed), or pins `x` when that cannot be followed.
  void restrict(int i, const Space& x, const torch::Tensor& picked, size_t slot = 0);
};

using OpRule = std::function<void(RuleContext&, int node)>;

// Registers (or replaces) the rule and kind of op `op`. Kind feeds count_ops (MACs, norm and
// elementwise counts); the rule feeds the dependency graph.
void register_op_rule(const std::string& op, OpKind kind, OpRule rule);
// `op` behaves like `like` (an existing op): same kind, same rule. Throws naming the known ops when
// `like` has no rule.
void register_op_alias(const std::string& op, const std::string& like);
// Ops with a rule, sorted.
std::vector<std::string> ruled_ops();
// Whether `op` is a batch norm (one op name per backend, or an alias of one); batch-norm folding
// finds its pairs by this.
bool is_batch_norm_op(const std::string& op);

namespace detail {
// The rule of `op`, or null when it has none (the graph then pins what it touches).
OpRule find_op_rule(const std::string& op);
OpKind op_kind(const std::string& op);
// The op whose rule `op` has: `op` itself, or for an alias the op it was made like.
std::string op_origin(const std::string& op);
}  // namespace detail

}  // namespace libprune::graph
