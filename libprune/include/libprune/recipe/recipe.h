#pragma once
// Recipes: JSON files (configs/*.json) that say what to train, how to prune it and where to write.
// Every key has a default; the keys and their meaning come from the library's option lists
// (libprune/options.h), so a recipe, the C++ options structs and Python's keyword arguments share
// one vocabulary (docs/recipes.md). Unknown keys, renamed keys, wrong types, unknown choices (a
// criterion, reduction, optimizer, LR schedule, schedule kind, data kind or model name) and
// out-of-range values are errors naming the file, the JSON path and the fix, raised when the recipe
// loads, before any data is read.
#include "libprune/prune/options.h"
#include "libprune/quant/quantize.h"
#include "libprune/recipe/sections.h"
#include "libprune/report/options.h"
#include "libprune/schedule/schedule.h"
#include "libprune/train/options.h"

#include <string>
#include <vector>

namespace libprune::recipe {

struct Stage {
  prune::PrunerOptions pruner;
  schedule::ScheduleOptions schedule;  // its ratio is the stage's
  StageSection extra;
};

struct Recipe {
  std::string name, output_dir;
  ModelSection model;
  DataSection data;
  train::TrainOptions training;
  std::vector<Stage> pruning;
  quant::QuantOptions quant;   // the `quantization` section's bits, observer, averaging_constant
  QuantSection quantization;  // and its mode and schedule
  report::ReportOptions report;
  std::string json;  // the merged recipe, every key present
};

// The recipe at `path` with `sets` ("training.epochs=3", "pruning.0.ratio=0.3"; values are JSON, or
// plain strings) applied and checked, merged over the defaults, as JSON text.
std::string load(const std::string& path, const std::vector<std::string>& sets = {});
// The same for recipe text already in memory; `source` names it in errors.
std::string load_text(const std::string& text, const std::string& source, const std::vector<std::string>& sets = {});
// The same, as typed options.
Recipe read(const std::string& path, const std::vector<std::string>& sets = {});
Recipe read_text(const std::string& text, const std::string& source, const std::vector<std::string>& sets = {});

// Every key with its default, as JSON text (documentation, tools).
std::string defaults();
// The key tables of docs/recipes.md, made from the option lists (`libprune-run --print-options`).
std::string options_markdown();

}  // namespace libprune::recipe
