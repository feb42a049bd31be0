#pragma once
// Groups of coupled channels, found from a Trace.
//
// Every channel of every traced activation is an *element*; ops say which elements are the same
// channel (an add joins its inputs' channels, a depthwise conv its input's and output's, a concat
// lays its inputs' channels side by side, a flatten repeats a channel over its spatial block).
// Elements joined this way form a *unit*: one channel that must be cut everywhere at once. Units
// touching the same set of tensor dimensions form a *group*, the thing importance ranks and a
// plan cuts. An op the tracer does not understand pins the elements it touches, with a reason.
#include "libprune/graph/trace.h"

#include <string>
#include <vector>

namespace libprune::graph {

// One tensor dimension a group cuts: `tensor` (parameter or buffer name) along `dim`.
struct Member {
  std::string tensor;
  int64_t dim = 0;
  bool operator<(const Member& o) const { return tensor != o.tensor ? tensor < o.tensor : dim < o.dim; }
  bool operator==(const Member& o) const { return tensor == o.tensor && dim == o.dim; }
};

struct Group {
  std::vector<Member> members;
  // The indices along members[m] that unit u owns (a flatten gives several), in ascending order.
  c10::ArrayRef<int64_t> unit(size_t u, size_t m) const {
    const size_t k = u * members.size() + m;
    return c10::ArrayRef<int64_t>(index_data_.data() + offsets_[k], offsets_[k + 1] - offsets_[k]);
  }
  // Appends a unit: its indices along each member, in member order.
  void add_unit(const std::vector<std::vector<int64_t>>& indices);
  // Every unit's indices, [unit][member] (a copy, for reports and bindings).
  std::vector<std::vector<std::vector<int64_t>>> indices() const;
  bool pinned = false;
  std::string reason;  // why it is pinned
  // The model's hidden size (embedding dim): channels a LayerNorm normalises in a model with
  // attention, which also run along its residual stream. Pruners keep it unless asked.
  bool hidden = false;
  // A LayerNorm or GroupNorm computes its statistics across these channels, so cutting some changes
  // the values of the ones kept: the cut is not exact (layers::check_exact checks its shapes only).
  bool normalised = false;
  // Units (channels, heads).
  int64_t size() const { return members.empty() ? 0 : static_cast<int64_t>((offsets_.size() - 1) / members.size()); }
  // Names the group in reports: the first weight cut along dim 0 ("layer1.0.conv1.weight"), else
  // the first member with its dim ("conv1.weight@dim1"). Not unique when a layer's channels split
  // into pinned and free groups; index groups() for identity.
  std::string name() const;

  // Storage, flat: unit u's indices along member m are index_data_[offsets_[u * members + m], ...
  // offsets_[u * members + m + 1]). A resnet50 has ~12k units; nested vectors cost more to make and
  // free than the rest of a pruning step's bookkeeping.
  std::vector<int64_t> index_data_;
  std::vector<size_t> offsets_{0};
};

// A tensor dim cut together with another, index for index: a batch norm's running statistics with
// its weight, an extension's per-channel state with its layer's weight. The graph cannot see them
// (buffers are not in the autograd graph); the model access lists them (layers::ModelAccess).
struct Companion {
  std::string tensor;
  int64_t dim = 0;
  int64_t size = 0;  // along dim; a companion of another size is left out
  std::string follows;
  int64_t follows_dim = 0;
};

class DependencyGraph {
 public:
  // Op rules (op_rules.h) couple the trace's channels; companions join the members they follow.
  explicit DependencyGraph(const Trace& trace, const std::vector<Companion>& companions = {});

  const std::vector<Group>& groups() const { return groups_; }
  // Pins group `group` (an index into groups()) with `reason`, unless it is pinned already. For
  // policies above the graph: the hidden size, heads a module ties to it.
  void pin(size_t group, const std::string& reason);
  // Every group with its members; for pinned ones, the op and the reason.
  std::string explain() const;

 private:
  std::vector<Group> groups_;
};

}  // namespace libprune::graph
