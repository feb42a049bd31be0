#pragma once
// The pruner's options, defined once (libprune/options.h): recipes (pruning.N.<key>), C++
// (PrunerOptions().ratio(0.5)), Python (prune(model, x, ratio=0.5), libprune.PrunerOptions) and
// docs/recipes.md all come from this list.
#include "libprune/importance/importance.h"
#include "libprune/options.h"

#include <string>
#include <vector>

namespace libprune::prune {

using RatioMap = options::RatioMap;
// A per-layer ratio: module name (exact, or a std::regex_match pattern) and its ratio.
using RatioOverrides = options::RatioMap;
using Strings = std::vector<std::string>;

// The problem with a `target` ("" when none): one kind of docs/recipes.md's budgets, a value in range.
std::string check_target(const std::string& name, const options::RatioMap& target);
// Whether `target` is a latency budget (latency or latency_ms), which needs a latency table.
bool is_latency_target(const options::RatioMap& target);

// How a budget divides its cut across groups: by the criterion's scores (the least importance lost
// per cost saved) or by a sensitivity scan's measured metric drops (the least predicted drop).
enum class Allocation { importance, sensitivity };

// X("key", type, field, default, check, "meaning")
#define LIBPRUNE_PRUNER_OPTIONS(X)                                                                                     \
  X("ratio", double, ratio, 0.5, ::libprune::options::check::fraction("e.g. 0.5 removes half of the channels"),          \
    "fraction of channels removed: of each group (local) or of all groups together (global_pruning), counted against "  \
    "the sizes first seen, so steps toward it (iterative, AGP) reach the same total as one step")                       \
  X("target", RatioMap, target, {}, ::libprune::prune::check_target,                                                    \
    "a budget instead of a ratio, one of {\"latency\": fraction of dense}, {\"latency_ms\": ms}, {\"macs\": fraction}, " \
    "{\"params\": fraction}: each group's width is chosen to keep the most importance within it (latency from a "     \
    "table measured on this machine at latency_batch); schedules step the budget")                                     \
  X("latency_batch", int64_t, latency_batch, 32, ::libprune::options::check::at_least<int64_t>(1, "e.g. 32"),          \
    "the batch size a latency target is measured at (recipes build the table from the data at this batch)")             \
  X("importance", std::string, importance, "l1",                                                                        \
    (::libprune::options::check::OneOf{::libprune::importance::criteria, "importance"}),                                  \
    "how channels are ranked: a criterion of importance::criteria(), built in or registered (docs/recipes.md)")          \
  X("reduction", ::libprune::importance::Reduction, reduction, ::libprune::importance::Reduction::Sum, nullptr,         \
    "how a channel's values in the group's members combine: sum, mean, max, first")                                    \
  X("normalize", bool, normalize, false, nullptr, "divide each group's scores by their sum")                            \
  X("seed", uint64_t, seed, 0, nullptr, "seed of the random criterion")                                                 \
  X("global_pruning", bool, global_pruning, false, nullptr,                                                            \
    "rank channels across groups (scores divided by their group's mean) instead of within each group")                  \
  X("allocation", ::libprune::prune::Allocation, allocation, ::libprune::prune::Allocation::importance, nullptr,        \
    "how a target divides its cut across groups: importance (the criterion's scores: the least importance lost per "  \
    "cost saved) or sensitivity (a sensitivity scan's metric drop per group, interpolated between its ratios: the "    \
    "least predicted drop per cost saved; the criterion still picks the units within a group; recipes need "         \
    "report.sensitivity_step, on the first pruning stage)")                                                           \
  X("ignored_layers", Strings, ignored_layers, {}, nullptr,                                                             \
    "module names whose output channels stay (the classifier); their inputs still follow their producer")               \
  X("overrides", RatioOverrides, overrides, {}, nullptr,                                                                \
    "per-layer ratios {module name or regex: ratio}; a group takes the first naming a module whose outputs it cuts "     \
    "(local ranking; with global_pruning it leaves the global ranking, so {\".*intermediate\\\\.dense\": 0} prunes "    \
    "only a BERT's heads)")                                                                                                  \
  X("max_ratio", double, max_ratio, 1.0, ::libprune::options::check::in_range(0, true, 1, false, "e.g. 0.9"),          \
    "no group loses more than this fraction, whatever the ratio or ranking; ratios above it are errors")                \
  X("round_to", int64_t, round_to, 1, ::libprune::options::check::at_least<int64_t>(1, "e.g. 8"),                       \
    "kept channel counts are a multiple of this (8 or 16 on AVX-512 CPUs, where other counts run slower per MAC)")      \
  X("min_channels", int64_t, min_channels, 1, ::libprune::options::check::at_least<int64_t>(1, "e.g. 1"),               \
    "no group keeps fewer channels")                                                                                    \
  X("verify", bool, verify, true, nullptr,                                                                              \
    "after a cut, run the example forward and compare it with the dense model's with the cut channels zeroed; on "    \
    "failure (an error, other shapes, other values) roll back, pin the culprit groups and cut the rest")               \
  X("verify_values", bool, verify_values, true, nullptr,                                                                \
    "verification compares values too (one more forward of the dense model); false: only that the forward runs and "  \
    "keeps its output shapes")                                                                                          \
  X("prune_hidden", bool, prune_hidden, false, nullptr,                                                                 \
    "also cut the hidden size (embedding dim) of models with attention, which changes every block")

struct PrunerOptions {
  PrunerOptions() = default;
  LIBPRUNE_PRUNER_OPTIONS(LIBPRUNE_OPTION_FIELD)
 public:
  // The list as specs, and keys renamed since (an old name fails with "renamed to ...").
  static const std::vector<options::Spec<PrunerOptions>>& specs();
  static const std::vector<options::Renamed>& renamed();
  // Every option's check, then ratio <= max_ratio and the overrides; throws c10::ValueError naming
  // the option and the fix.
  void validate() const;
  // The same problem as validate() would report, with its key; "" when none.
  std::string problem(std::string* key) const;
};

}  // namespace libprune::prune

namespace libprune::options {
template <>
struct EnumNames<prune::Allocation> {
  static constexpr const char* what = "allocation";
  static constexpr const char* names[] = {"importance", "sensitivity"};
};
}  // namespace libprune::options
