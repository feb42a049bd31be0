#pragma once
// A recipe's datasets, built from its `data` section.
#include "libprune/data/dataset.h"
#include "libprune/recipe/sections.h"

#include <memory>

namespace libprune::recipe::detail {

struct Datasets {
  std::shared_ptr<data::Dataset> train, eval;
  int64_t channels = 1;
  int64_t vocab_size = 0;  // text: the tokenizer's
  std::string tokenizer;   // text: the tokenizer model file
};

// `output_dir` holds a text run's tokenizer.model.
Datasets make_data(const DataSection& d, const std::string& output_dir);

}  // namespace libprune::recipe::detail
