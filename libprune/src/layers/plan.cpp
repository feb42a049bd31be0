#include "libprune/layers/plan.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace libprune::layers {

std::string PruningPlan::to_json() const {
  nlohmann::json j;
  j["format"] = "libprune.plan/1";
  j["cuts"] = nlohmann::json::array();
  for (const auto& c : cuts) {
    j["cuts"].push_back({{"tensor", c.tensor}, {"dim", c.dim}, {"original_size", c.original_size}, {"keep", c.keep}});
  }
  j["groups"] = nlohmann::json::array();
  for (const auto& g : groups) j["groups"].push_back({{"name", g.first}, {"before", g.second.first}, {"after", g.second.second}});
  return j.dump();
}

PruningPlan PruningPlan::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    TORCH_CHECK_VALUE(false, "pruning plan is not valid JSON (", e.what(), "). Fix: pass the text of plan.to_json()");
  }
  const bool format_ok = j.is_object() && j.contains("format") && j["format"].is_string() &&
                         j["format"].get<std::string>() == "libprune.plan/1";
  TORCH_CHECK_VALUE(format_ok,
                    "pruning plan: expected an object with \"format\": \"libprune.plan/1\". Fix: pass the text of "
                    "plan.to_json()");
  TORCH_CHECK_VALUE(j.contains("cuts") && j["cuts"].is_array(), "pruning plan: \"cuts\" must be an array");
  PruningPlan plan;
  for (size_t i = 0; i < j["cuts"].size(); ++i) {
    const auto& c = j["cuts"][i];
    const std::string at = "pruning plan: cuts[" + std::to_string(i) + "]";
    try {
      TensorCut cut;
      cut.tensor = c.at("tensor").get<std::string>();
      cut.dim = c.at("dim").get<int64_t>();
      cut.original_size = c.at("original_size").get<int64_t>();
      cut.keep = c.at("keep").get<std::vector<int64_t>>();
      plan.cuts.push_back(std::move(cut));
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, at, ": ", e.what(), ". Fix: each cut needs tensor (string), dim, original_size (integers) "
                        "and keep (array of integers)");
    }
  }
  if (j.contains("groups") && j["groups"].is_array()) {
    try {
      for (const auto& g : j["groups"]) {
        plan.groups.push_back({g.at("name").get<std::string>(), {g.at("before").get<int64_t>(), g.at("after").get<int64_t>()}});
      }
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, "pruning plan: groups: ", e.what(), ". Fix: each group needs name, before and after");
    }
  }
  return plan;
}

}  // namespace libprune::layers
