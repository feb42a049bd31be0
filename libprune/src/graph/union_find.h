#pragma once
// Channel elements joined into units: a union-find with path halving, smaller ids as roots (so a
// unit's root is its first element, which keeps grouping deterministic).
#include <algorithm>
#include <cstdint>
#include <vector>

namespace libprune::graph::detail {

class UnionFind {
 public:
  std::vector<int64_t> fresh(int64_t n) {
    std::vector<int64_t> out(static_cast<size_t>(n));
    for (auto& e : out) {
      e = static_cast<int64_t>(parent_.size());
      parent_.push_back(e);
    }
    return out;
  }
  int64_t find(int64_t e) {
    while (parent_[static_cast<size_t>(e)] != e) {
      parent_[static_cast<size_t>(e)] = parent_[static_cast<size_t>(parent_[static_cast<size_t>(e)])];
      e = parent_[static_cast<size_t>(e)];
    }
    return e;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent_[static_cast<size_t>(std::max(a, b))] = std::min(a, b);
  }

 private:
  std::vector<int64_t> parent_;
};

}  // namespace libprune::graph::detail
