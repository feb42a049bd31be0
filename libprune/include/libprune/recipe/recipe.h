#pragma once
// Recipes: JSON files (configs/*.json) that say what to train, how to prune it and where to write.
// Every key has a default (docs/recipes.md); unknown keys, wrong types and out-of-range values are
// errors naming the file, the JSON path and the fix.
#include <string>
#include <vector>

namespace libprune::recipe {

// The recipe at `path` with `sets` ("training.epochs=3", "pruning.0.target_ratio=0.3"; values are
// JSON, or plain strings) applied and checked, merged over the defaults, as JSON text.
std::string load(const std::string& path, const std::vector<std::string>& sets = {});

// The same for recipe text already in memory; `source` names it in errors.
std::string load_text(const std::string& text, const std::string& source, const std::vector<std::string>& sets = {});

// Every key with its default, as JSON text (documentation, tools).
std::string defaults();

}  // namespace libprune::recipe
