#include "libprune/train/plan_history.h"

#include <nlohmann/json.hpp>

namespace libprune::train {

std::string plans_to_json(const PlanHistory& plans) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& p : plans) arr.push_back(nlohmann::json::parse(p.to_json()));
  return arr.dump();
}

PlanHistory plans_from_json(const std::string& json) {
  PlanHistory out;
  for (const auto& p : nlohmann::json::parse(json)) out.push_back(layers::PruningPlan::from_json(p.dump()));
  return out;
}

}  // namespace libprune::train
