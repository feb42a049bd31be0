#include "libprune/prune/options.h"

#include "budget.h"

#include <regex>

namespace libprune::prune {

std::string check_target(const std::string& name, const options::RatioMap& target) {
  const auto problem = detail::target_problem(target);
  return problem.empty() ? problem : name + ": " + problem;
}

bool is_latency_target(const options::RatioMap& target) {
  return !target.empty() && (target.front().first == "latency" || target.front().first == "latency_ms");
}

LIBPRUNE_DEFINE_OPTION_SPECS(PrunerOptions, LIBPRUNE_PRUNER_OPTIONS)

const std::vector<options::Renamed>& PrunerOptions::renamed() {
  static const std::vector<options::Renamed> list{{"target_ratio", "ratio"},
                                                  {"criterion", "importance"},
                                                  {"scope", "global_pruning"},
                                                  {"global_ranking", "global_pruning"},
                                                  {"ignored", "ignored_layers"}};
  return list;
}

namespace {

// Checks that involve two options: the ratio and every override against max_ratio, and the
// overrides' patterns.
std::string cross_check(const PrunerOptions& o, std::string* key) {
  auto above = [&](double r, const std::string& what) {
    return what + " " + options::format_number(r) + " is above max_ratio " + options::format_number(o.max_ratio()) +
           ". Fix: lower it or raise max_ratio";
  };
  if (o.ratio() > o.max_ratio() + 1e-12) {
    *key = "ratio";
    return above(o.ratio(), "ratio");
  }
  if (!o.target().empty() && !o.overrides().empty()) {
    *key = "overrides";
    return "overrides set ratios, a target sets a budget: give one. Fix: drop the overrides (the budget chooses each "
           "layer's width) or the target";
  }
  if (o.allocation() == Allocation::sensitivity && o.target().empty()) {
    *key = "allocation";
    return "allocation sensitivity divides a budget's cut across groups, and there is no target. Fix: give a target "
           "(e.g. {\"latency\": 0.4}) or drop allocation";
  }
  for (const auto& [pattern, r] : o.overrides()) {
    *key = "overrides." + pattern;
    if (r < 0 || r >= 1) {
      return "ratio override for \"" + pattern + "\" must be in [0, 1), got " + options::format_number(r) + ". Fix: e.g. 0.3";
    }
    if (r > o.max_ratio() + 1e-12) return above(r, "ratio override for \"" + pattern + "\"");
    try {
      std::regex re(pattern);
    } catch (const std::regex_error& e) {
      return "ratio override \"" + pattern + "\" is not a valid regex (" + e.what() +
             "). Fix: use a module name such as \"layer1.0.conv1\" or a regex such as \"layer4\\..*\"";
    }
  }
  return {};
}

}  // namespace

std::string PrunerOptions::problem(std::string* key) const {
  return options::first_problem<PrunerOptions>(specs(), *this, cross_check, key);
}

void PrunerOptions::validate() const { options::validate<PrunerOptions>(specs(), *this, "", cross_check); }

}  // namespace libprune::prune
