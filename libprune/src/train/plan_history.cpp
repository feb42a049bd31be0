#include "libprune/train/plan_history.h"

#include <nlohmann/json.hpp>

namespace libprune::train {

std::string plans_to_json(const PlanHistory& plans) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& p : plans) arr.push_back(nlohmann::json::parse(p.to_json()));
  return arr.dump();
}

PlanHistory plans_from_json(const std::string& json) {
  nlohmann::json plans;
  try {
    plans = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK_VALUE(false, "plan history is not valid JSON (", e.what(), "). Fix: pass the text of plans_to_json()");
  }
  TORCH_CHECK_VALUE(plans.is_array(), "plan history must be a JSON array of plans, got ", plans.type_name(),
                    ". Fix: pass the text of plans_to_json()");
  PlanHistory out;
  for (const auto& p : plans) out.push_back(layers::PruningPlan::from_json(p.dump()));
  return out;
}

}  // namespace libprune::train
