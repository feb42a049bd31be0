#pragma once
// The dependency graph's builder: walks a trace in topological order and runs each node's op rule
// (op_rules.h) against itself as the RuleContext, then groups the units (grouping.cpp).
#include "libprune/graph/dependency_graph.h"
#include "libprune/graph/op_rules.h"
#include "union_find.h"

#include <map>
#include <string>
#include <vector>

namespace libprune::graph::detail {

// What the rules leave behind, and what grouping reads.
struct Units {
  UnionFind uf;
  std::map<int64_t, std::string> reasons;           // element -> why it is pinned (ordered: deterministic)
  std::map<Member, std::vector<int64_t>> members;   // member -> element per index
  std::vector<int64_t> layer_normed;                // elements a LayerNorm normalises
  std::vector<int64_t> normalised;                  // elements any norm computes statistics across
  bool attention = false;                           // the model multiplies two activations
};

// Units with the same members (and pin state) form one group.
std::vector<Group> make_groups(Units& units);

class Builder final : public RuleContext {
 public:
  Builder(const Trace& trace, const std::vector<Companion>& companions);
  std::vector<Group> run();

  const Trace& trace() const override { return trace_; }
  const Space& input(int i, size_t k) const override;
  std::vector<int64_t> fresh(int64_t n) override { return units_.uf.fresh(n); }
  int64_t find(int64_t e) override { return units_.uf.find(e); }
  using RuleContext::unite;
  void unite(int64_t a, int64_t b) override { units_.uf.unite(a, b); }
  using RuleContext::pin;
  void pin(const std::vector<int64_t>& elements, const std::string& reason) override;
  void member(const std::string& tensor, int64_t dim, const std::vector<int64_t>& elements) override;
  void set(int i, Space s, size_t slot = 0) override;
  void mark_normalised(const std::vector<int64_t>& elements, bool layer_norm) override;
  void mark_attention() override { units_.attention = true; }

 private:
  const Trace& trace_;
  std::map<Member, std::vector<Companion>> followers_;
  std::vector<std::vector<Space>> spaces_;
  Units units_;
};

}  // namespace libprune::graph::detail
