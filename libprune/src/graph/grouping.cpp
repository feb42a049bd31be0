// From units (union-find roots) to groups: units touching the same set of tensor dims, with the
// same pin state, are one group, the thing importance ranks and a plan cuts.
#include "builder.h"

#include <algorithm>
#include <set>
#include <unordered_map>

namespace libprune::graph::detail {
namespace {

struct Signature {
  std::vector<size_t> members;  // ids into the member list
  std::string reason;           // why its units are pinned; empty when free
  bool operator<(const Signature& o) const { return std::tie(members, reason) < std::tie(o.members, o.reason); }
};

// The group of units `roots` with signature `key`; `by_root` holds each root's (member id, index) pairs.
Group make_group(const Signature& key, const std::vector<int64_t>& roots, const std::vector<Member>& member_list,
                 std::unordered_map<int64_t, std::vector<std::pair<size_t, int64_t>>>& by_root,
                 const std::set<int64_t>& hidden_roots) {
  Group g;
  for (size_t id : key.members) g.members.push_back(member_list[id]);
  g.pinned = !key.reason.empty();
  g.reason = key.reason;
  for (int64_t r : roots) {
    if (hidden_roots.count(r)) g.hidden = true;
    std::vector<std::vector<int64_t>> idx(g.members.size());
    for (const auto& [id, j] : by_root[r]) {
      const auto pos = static_cast<size_t>(std::find(key.members.begin(), key.members.end(), id) - key.members.begin());
      idx[pos].push_back(j);
    }
    g.indices.push_back(std::move(idx));
  }
  // Units in the order of their first index in the first member.
  std::sort(g.indices.begin(), g.indices.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
  const bool one_unit = g.indices.size() == 1 && std::any_of(g.indices[0].begin(), g.indices[0].end(),
                                                             [](const auto& idx) { return idx.size() > 1; });
  if (!g.pinned && one_unit) {
    // Removing the only unit would remove the whole layer; nothing smaller can go.
    g.pinned = true;
    g.reason = "coupling ties all its channels into one unit (through shuffles, equal splits or groups), so none can "
               "be removed on its own";
  }
  return g;
}

}  // namespace

std::vector<Group> make_groups(Units& units) {
  std::vector<Member> member_list;
  std::unordered_map<int64_t, std::vector<std::pair<size_t, int64_t>>> by_root;  // root -> (member id, index)
  for (const auto& [m, elems] : units.members) {
    const size_t id = member_list.size();
    member_list.push_back(m);
    for (size_t j = 0; j < elems.size(); ++j) by_root[units.uf.find(elems[j])].emplace_back(id, static_cast<int64_t>(j));
  }
  std::map<int64_t, std::string> root_reason;
  for (const auto& [e, reason] : units.reasons) root_reason.emplace(units.uf.find(e), reason);
  std::set<int64_t> hidden_roots;
  if (units.attention) {
    for (auto e : units.layer_normed) hidden_roots.insert(units.uf.find(e));
  }
  std::map<Signature, std::vector<int64_t>> by_signature;
  std::vector<int64_t> roots;
  for (const auto& kv : by_root) roots.push_back(kv.first);
  std::sort(roots.begin(), roots.end());
  for (int64_t r : roots) {
    Signature sig;
    for (const auto& [id, idx] : by_root[r]) sig.members.push_back(id);
    std::sort(sig.members.begin(), sig.members.end());
    sig.members.erase(std::unique(sig.members.begin(), sig.members.end()), sig.members.end());
    auto it = root_reason.find(r);
    if (it != root_reason.end()) sig.reason = it->second;
    by_signature[sig].push_back(r);
  }
  std::vector<Group> out;
  for (const auto& [key, unit_roots] : by_signature) {
    out.push_back(make_group(key, unit_roots, member_list, by_root, hidden_roots));
  }
  std::sort(out.begin(), out.end(), [](const Group& a, const Group& b) { return a.name() < b.name(); });
  return out;
}

}  // namespace libprune::graph::detail
