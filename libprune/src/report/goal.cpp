#include "goal.h"

#include "libprune/io/state_dict.h"

#include <algorithm>
#include <cstdio>

namespace libprune::report {
namespace detail {

Goal parse_goal(const std::string& text) {
  Goal g;
  const auto eq = text.find('=');
  const std::string kind = text.substr(0, eq);
  const std::string fix = ". Fix: a goal such as latency_b32=0.25 (batch-32 latency at most 0.25 of the dense model's)";
  TORCH_CHECK_VALUE(eq != std::string::npos && kind.rfind("latency_b", 0) == 0, "\"", text,
                    "\" is not latency_b<batch>=<fraction>", fix);
  try {
    size_t used = 0;
    g.batch = std::stoll(kind.substr(9), &used);
    TORCH_CHECK_VALUE(used == kind.size() - 9, "");
    g.latency = std::stod(text.substr(eq + 1), &used);
    TORCH_CHECK_VALUE(used == text.size() - eq - 1, "");
  } catch (const std::exception&) {
    TORCH_CHECK_VALUE(false, "\"", text, "\" is not latency_b<batch>=<fraction>", fix);
  }
  TORCH_CHECK_VALUE(g.batch >= 1 && g.latency > 0 && g.latency < 1, "\"", text,
                    "\" needs a batch >= 1 and a fraction in (0, 1)", fix);
  return g;
}

}  // namespace detail

std::string judge_goal(const std::string& rows_json, const ReportOptions& options) {
  using json = nlohmann::json;
  const auto goal = detail::parse_goal(options.goal());
  const std::string key = "latency_ms_b" + std::to_string(goal.batch);
  const json rows = json::parse(rows_json);
  const auto find = [&](const std::string& name) -> const json* {
    for (const auto& r : rows) {
      if (r.value("row", std::string()) == name) return &r;
    }
    return nullptr;
  };
  const json* dense = find("dense");
  TORCH_CHECK_VALUE(dense && dense->contains(key), "report.goal ", options.goal(), ": the dense model was not timed at ",
                    "batch ", goal.batch, ". Fix: add ", goal.batch, " to report.latency_batches");
  const auto number = [&](const json& row, const std::string& field) {
    TORCH_CHECK_VALUE(row.contains(field) && row[field].is_number(), "report.goal: row ", row.value("row", "?"),
                      " has no number under \"", field, "\". Fix: pass summary.json's rows, as libprune-run writes them");
    return row[field].get<double>();
  };
  TORCH_CHECK_VALUE(number(*dense, key) > 0, "report.goal: the dense row's ", key, " is not positive. Fix: pass "
                    "summary.json's rows, as libprune-run writes them");
  const double dense_accuracy = number(*dense, "accuracy");
  json out{{"goal", options.goal()}, {"max_drop", options.max_drop()}, {"chosen", nullptr}};
  json candidates = json::array();
  // (A QAT run that does not prune has int8_ptq, the PTQ of dense, beside int8, its QAT model.)
  for (const std::string name : {"int8_ptq", "int8", "pruned", "pruned_int8_ptq", "pruned_int8"}) {
    const json* r = find(name);
    if (!r) continue;
    json c{{"row", name}, {"label", r->value("label", name)}, {"accuracy", number(*r, "accuracy")}};
    const double drop = dense_accuracy - c["accuracy"].get<double>();
    c["drop"] = drop;
    // A PTQ row runs the kernels of the timed int8 row of its architecture.
    const json* timed = r;
    const bool ptq = name.size() > 4 && name.compare(name.size() - 4, 4, "_ptq") == 0;
    if (!r->contains(key) && ptq && find(name.substr(0, name.size() - 4))) timed = find(name.substr(0, name.size() - 4));
    char text[160];
    if (!timed->contains(key)) {
      c["verdict"] = "not timed at batch " + std::to_string(goal.batch);
    } else {
      const double ratio = number(*timed, key) / number(*dense, key);
      c["latency_ratio"] = ratio;
      if (ratio > goal.latency) {
        std::snprintf(text, sizeof text, "too slow: %.3f of dense at batch %lld, the goal is %.3f", ratio,
                      static_cast<long long>(goal.batch), goal.latency);
      } else if (drop > options.max_drop() + 1e-9) {
        std::snprintf(text, sizeof text, "loses %.2f pt, the limit is %.2f", drop, options.max_drop());
      } else if (out["chosen"].is_null()) {
        out["chosen"] = name;
        std::snprintf(text, sizeof text, "chosen: the first within both");
      } else {
        std::snprintf(text, sizeof text, "within both, after the chosen one");
      }
      c["verdict"] = text;
    }
    candidates.push_back(c);
  }
  out["candidates"] = candidates;
  return out.dump();
}

namespace detail {

bool save_chosen(const Comparison& comparison, const std::string& chosen, const std::string& path) {
  const auto& rows = comparison.rows();
  const auto it = std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.key == chosen; });
  if (it == rows.end()) return false;
  const bool int8 = chosen.find("int8") != std::string::npos;
  if (!it->model || it->architecture_only) return false;
  io::write_state_dict(int8 ? quant::int8_state_dict(*it->model) : io::state_dict(*it->model), path);
  return true;
}

}  // namespace detail
}  // namespace libprune::report
