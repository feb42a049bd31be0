#include "libprune/layers/plan.h"

#include <c10/util/Exception.h>
#include <cstdint>
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
  if (!notes.empty()) j["notes"] = notes;
  if (importance_kept >= 0) j["importance_kept"] = importance_kept;
  return j.dump();
}

namespace {

// An integer JSON number that fits int64 (nlohmann's get<int64_t> casts floats, out of range too).
int64_t plan_integer(const nlohmann::json& v, const std::string& at, const char* key) {
  const bool fits = v.is_number_integer() &&
                    (!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX));
  TORCH_CHECK_VALUE(fits, at, ": ", key, " must be an integer, got ", v.dump(), ". Fix: pass the text of plan.to_json()");
  return v.get<int64_t>();
}

}  // namespace

PruningPlan PruningPlan::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse errors, and numbers no type holds
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
      cut.dim = plan_integer(c.at("dim"), at, "dim");
      cut.original_size = plan_integer(c.at("original_size"), at, "original_size");
      TORCH_CHECK_VALUE(c.at("keep").is_array(), at, ": keep must be an array. Fix: pass the text of plan.to_json()");
      for (const auto& k : c.at("keep")) cut.keep.push_back(plan_integer(k, at, "keep"));
      plan.cuts.push_back(std::move(cut));
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, at, ": ", e.what(), ". Fix: each cut needs tensor (string), dim, original_size (integers) "
                        "and keep (array of integers)");
    }
  }
  if (j.contains("groups") && j["groups"].is_array()) {
    try {
      for (const auto& g : j["groups"]) {
        const std::string at = "pruning plan: groups";
        plan.groups.push_back({g.at("name").get<std::string>(),
                               {plan_integer(g.at("before"), at, "before"), plan_integer(g.at("after"), at, "after")}});
      }
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, "pruning plan: groups: ", e.what(), ". Fix: each group needs name, before and after");
    }
  }
  if (j.contains("notes") && j["notes"].is_array()) {
    for (const auto& n : j["notes"]) {
      TORCH_CHECK_VALUE(n.is_string(), "pruning plan: notes must be strings. Fix: remove the notes or write them as text");
      plan.notes.push_back(n.get<std::string>());
    }
  }
  if (j.contains("importance_kept")) {
    const auto& v = j["importance_kept"];
    TORCH_CHECK_VALUE(v.is_number() && v.get<double>() >= 0 && v.get<double>() <= 1,
                      "pruning plan: importance_kept must be a number in [0, 1], got ", v.dump(), ". Fix: remove it or correct it");
    plan.importance_kept = v.get<double>();
  }
  return plan;
}

}  // namespace libprune::layers
