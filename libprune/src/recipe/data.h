#pragma once
// A recipe's datasets, built from its `data` section.
#include "libprune/data/dataset.h"
#include "libprune/recipe/sections.h"

#include <memory>

namespace libprune::recipe::detail {

struct Datasets {
  std::shared_ptr<data::Dataset> train, eval;
  int64_t channels = 1;
};

Datasets make_data(const DataSection& d);

}  // namespace libprune::recipe::detail
