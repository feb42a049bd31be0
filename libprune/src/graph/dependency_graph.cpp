#include "libprune/graph/dependency_graph.h"

#include "builder.h"

#include <sstream>

namespace libprune::graph {

std::string Group::name() const {
  for (const auto& m : members) {
    if (m.dim == 0 && m.tensor.size() > 7 && m.tensor.compare(m.tensor.size() - 7, 7, ".weight") == 0) return m.tensor;
  }
  return members.empty() ? std::string{} : members.front().tensor + "@dim" + std::to_string(members.front().dim);
}

void Group::add_unit(const std::vector<std::vector<int64_t>>& indices) {
  TORCH_CHECK(indices.size() == members.size(), "Group::add_unit: ", indices.size(), " index lists for ", members.size(),
              " members");
  for (const auto& idx : indices) {
    index_data_.insert(index_data_.end(), idx.begin(), idx.end());
    offsets_.push_back(index_data_.size());
  }
}

std::vector<std::vector<std::vector<int64_t>>> Group::indices() const {
  std::vector<std::vector<std::vector<int64_t>>> out(static_cast<size_t>(size()));
  for (size_t u = 0; u < out.size(); ++u) {
    for (size_t m = 0; m < members.size(); ++m) out[u].push_back(unit(u, m).vec());
  }
  return out;
}

DependencyGraph::DependencyGraph(const Trace& trace, const std::vector<Companion>& companions)
    : groups_(detail::Builder(trace, companions).run()) {}

void DependencyGraph::pin(size_t group, const std::string& reason) {
  auto& g = groups_.at(group);
  if (g.pinned) return;
  g.pinned = true;
  g.reason = reason;
}

std::string DependencyGraph::explain() const {
  std::ostringstream s;
  size_t pinned = 0;
  for (const auto& g : groups_) pinned += g.pinned ? 1 : 0;
  s << groups_.size() << " groups, " << pinned << " pinned\n";
  for (size_t i = 0; i < groups_.size(); ++i) {
    const auto& g = groups_[i];
    s << "group " << i << " (" << g.name() << "): " << g.size() << " channels"
      << (g.pinned ? ", PINNED: " + g.reason : std::string{})
      << (g.normalised && !g.pinned ? ", normalised across (a LayerNorm or GroupNorm): its cut is not exact" : "")
      << "\n";
    for (const auto& m : g.members) s << "    " << m.tensor << " dim " << m.dim << "\n";
  }
  return s.str();
}

}  // namespace libprune::graph
