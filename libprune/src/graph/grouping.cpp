// From units (union-find roots) to groups: units touching the same set of tensor dims, with the
// same pin state, are one group, the thing importance ranks and a plan cuts.
//
// Flat arrays throughout (a resnet50 has ~12k units over ~160k member indices): each (member,
// index) is bucketed by its unit's root with a counting sort, so a unit's entries come out in member
// order, then index order, with no per-unit container.
#include "builder.h"

#include <algorithm>
#include <numeric>
#include <set>

namespace libprune::graph::detail {
namespace {

struct Entry {
  uint32_t member;
  int64_t index;
};

struct Signature {
  std::vector<uint32_t> members;  // ids into the member list, ascending
  std::string reason;             // why its units are pinned; empty when free
  bool operator<(const Signature& o) const { return std::tie(members, reason) < std::tie(o.members, o.reason); }
};

// The entries of every unit, bucketed by root: unit u's are entries[offsets[u], offsets[u + 1]).
struct Buckets {
  std::vector<int64_t> roots;  // ascending
  std::vector<size_t> offsets;
  std::vector<Entry> entries;
};

Buckets bucket_by_root(Units& units, std::vector<Member>& member_list) {
  // Two passes over the members: count each root's entries, then place them (in member, then index
  // order within a root, since members are visited in order).
  std::vector<size_t> count;
  for (const auto& [m, elems] : units.members) {
    member_list.push_back(m);
    for (const int64_t e : elems) {
      const auto r = static_cast<size_t>(units.uf.find(e));
      if (r >= count.size()) count.resize(r + 1, 0);
      ++count[r];
    }
  }
  Buckets b;
  b.offsets.push_back(0);
  std::vector<size_t> slot(count.size(), 0);
  for (size_t r = 0; r < count.size(); ++r) {
    if (count[r] == 0) continue;
    b.roots.push_back(static_cast<int64_t>(r));
    slot[r] = b.offsets.back();
    b.offsets.push_back(b.offsets.back() + count[r]);
  }
  b.entries.resize(b.offsets.back());
  uint32_t id = 0;
  for (const auto& [m, elems] : units.members) {
    for (size_t j = 0; j < elems.size(); ++j) {
      b.entries[slot[static_cast<size_t>(units.uf.find(elems[j]))]++] = {id, static_cast<int64_t>(j)};
    }
    ++id;
  }
  return b;
}

// Appends a unit to `g` from its entries (ascending member, then index; the group's members are
// the ones the entries name).
void add_unit(Group& g, const Entry* begin, const Entry* end, const std::vector<uint32_t>& members) {
  const Entry* e = begin;
  for (const uint32_t m : members) {
    for (; e != end && e->member == m; ++e) g.index_data_.push_back(e->index);
    g.offsets_.push_back(g.index_data_.size());
  }
}

// Units in the order of their first index in the first member, then the pin for groups whose
// coupling leaves a single unit with several indices.
void finish_group(Group& g) {
  const size_t units = static_cast<size_t>(g.size()), members = g.members.size();
  std::vector<size_t> order(units);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return g.unit(a, 0)[0] < g.unit(b, 0)[0]; });
  if (!std::is_sorted(order.begin(), order.end())) {
    Group sorted;  // only its index storage is used
    sorted.index_data_.reserve(g.index_data_.size());
    sorted.offsets_.reserve(g.offsets_.size());
    for (size_t u : order) {
      for (size_t m = 0; m < members; ++m) {
        const auto idx = g.unit(u, m);
        sorted.index_data_.insert(sorted.index_data_.end(), idx.begin(), idx.end());
        sorted.offsets_.push_back(sorted.index_data_.size());
      }
    }
    g.index_data_ = std::move(sorted.index_data_);
    g.offsets_ = std::move(sorted.offsets_);
  }
  bool several = false;
  for (size_t m = 0; units == 1 && m < members; ++m) several = several || g.unit(0, m).size() > 1;
  if (!g.pinned && several) {
    // Removing the only unit would remove the whole layer; nothing smaller can go.
    g.pinned = true;
    g.reason = "coupling ties all its channels into one unit (through shuffles, equal splits or groups), so none can "
               "be removed on its own";
  }
}

}  // namespace

std::vector<Group> make_groups(Units& units) {
  std::vector<Member> member_list;
  const Buckets b = bucket_by_root(units, member_list);
  std::map<int64_t, std::string> root_reason;
  for (const auto& [e, reason] : units.reasons) root_reason.emplace(units.uf.find(e), reason);
  std::set<int64_t> hidden_roots, normalised_roots;
  if (units.attention) {
    for (auto e : units.layer_normed) hidden_roots.insert(units.uf.find(e));
  }
  for (auto e : units.normalised) normalised_roots.insert(units.uf.find(e));
  std::map<Signature, size_t> group_of;
  std::vector<Group> out;
  std::vector<std::map<Signature, size_t>::const_iterator> signature_of;  // per group, its key in group_of
  // Units of one group are mostly neighbours (one layer's channels are consecutive elements), so the
  // previous unit's group is checked before the map.
  Signature sig;
  size_t previous_group = 0;
  for (size_t u = 0; u < b.roots.size(); ++u) {
    const Entry* begin = b.entries.data() + b.offsets[u];
    const Entry* end = b.entries.data() + b.offsets[u + 1];
    sig.members.clear();
    for (const Entry* e = begin; e != end; ++e) {
      if (sig.members.empty() || sig.members.back() != e->member) sig.members.push_back(e->member);
    }
    auto reason = root_reason.find(b.roots[u]);
    sig.reason = reason != root_reason.end() ? reason->second : std::string();
    if (u == 0 || sig.members != signature_of[previous_group]->first.members ||
        sig.reason != signature_of[previous_group]->first.reason) {
      auto [it, inserted] = group_of.emplace(sig, out.size());
      if (inserted) {
        Group g;
        for (uint32_t id : sig.members) g.members.push_back(member_list[id]);
        g.pinned = !sig.reason.empty();
        g.reason = sig.reason;
        out.push_back(std::move(g));
        signature_of.push_back(it);
      }
      previous_group = it->second;
    }
    auto& g = out[previous_group];
    if (hidden_roots.count(b.roots[u])) g.hidden = true;
    if (normalised_roots.count(b.roots[u])) g.normalised = true;
    add_unit(g, begin, end, signature_of[previous_group]->first.members);
  }
  for (auto& g : out) finish_group(g);
  // Groups by name, starting from the order their signatures sort in (the sort is not stable, so its
  // input order is kept as it was: groups with equal names keep their relative order run to run).
  std::vector<Group> sorted;
  for (const auto& [signature, index] : group_of) sorted.push_back(std::move(out[index]));
  std::sort(sorted.begin(), sorted.end(), [](const Group& a, const Group& c) { return a.name() < c.name(); });
  return sorted;
}

}  // namespace libprune::graph::detail
