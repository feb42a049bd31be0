// Compress to a target: a run's rows judged against a latency goal and an accuracy limit, in the
// recommended order (PTQ int8, pruned, pruned+int8 PTQ, pruned+int8 QAT).
#include "helpers.h"
#include "libprune/report/goal.h"

#include <nlohmann/json.hpp>

using namespace libprune;
using nlohmann::json;

namespace {

// Rows as summary.json holds them, shuffled: the judgement must not depend on their order.
const char* kGoalRows = R"rows([
  {"row": "pruned_int8", "label": "pruned+int8 (QAT)", "accuracy": 93.1, "latency_ms_b32": 2.0},
  {"row": "dense", "label": "dense", "accuracy": 93.0, "latency_ms_b32": 10.0},
  {"row": "pruned", "label": "pruned", "accuracy": 92.6, "latency_ms_b32": 5.0},
  {"row": "pruned_int8_ptq", "label": "pruned+int8 (PTQ)", "accuracy": 92.3},
  {"row": "int8", "label": "int8 (PTQ)", "accuracy": 93.0, "latency_ms_b32": 3.0},
  {"row": "pruned_lowbit", "label": "pruned+int4 (simulated QAT)", "accuracy": 90.9}])rows";

json judged(const std::string& goal, double max_drop) {
  return json::parse(report::judge_goal(kGoalRows, report::ReportOptions().goal(goal).max_drop(max_drop)));
}

}  // namespace

TEST_CASE("goal: the first candidate in the recommended order within both limits is chosen", "[budget]") {
  auto g = judged("latency_b32=0.25", 0.5);
  REQUIRE(g["candidates"].size() == 4);  // the simulated low-bit row is not deployable
  std::vector<std::string> order;
  for (const auto& c : g["candidates"]) order.push_back(c["row"]);
  CHECK(order == std::vector<std::string>{"int8", "pruned", "pruned_int8_ptq", "pruned_int8"});
  CHECK(g["candidates"][0]["verdict"] == "too slow: 0.300 of dense at batch 32, the goal is 0.250");
  CHECK(g["candidates"][1]["verdict"] == "too slow: 0.500 of dense at batch 32, the goal is 0.250");
  // The PTQ row was not timed: it runs the QAT row's kernels on the same shapes.
  CHECK(g["candidates"][2]["latency_ratio"].get<double>() == Approx(0.2));
  CHECK(g["candidates"][2]["verdict"] == "loses 0.70 pt, the limit is 0.50");
  CHECK(g["candidates"][3]["verdict"] == "chosen: the first within both");
  CHECK(g["chosen"] == "pruned_int8");
  // A looser limit takes the cheaper PTQ row first.
  g = judged("latency_b32=0.25", 1.0);
  CHECK(g["chosen"] == "pruned_int8_ptq");
  CHECK(g["candidates"][3]["verdict"] == "within both, after the chosen one");
  // Nothing fast enough: no choice.
  CHECK(judged("latency_b32=0.1", 5.0)["chosen"].is_null());
  // A batch the dense row was not timed at.
  CHECK(test::message_of([] { judged("latency_b8=0.5", 0.5); }).find("the dense model was not timed at batch 8. Fix: "
                                                                        "add 8 to report.latency_batches") !=
        std::string::npos);
}

TEST_CASE("goal: malformed goals and a batch that is not timed are refused with the fix", "[budget]") {
  const auto problem = [](const report::ReportOptions& o) {
    std::string key;
    return o.problem(&key);
  };
  CHECK(problem(report::ReportOptions().goal("latency_b32=0.25")).empty());
  for (const char* bad : {"speed=0.3", "latency_b32", "latency_bx=0.3", "latency_b32=1.5", "latency_b32=0.3ms"}) {
    const auto message = problem(report::ReportOptions().goal(bad));
    INFO(bad << ": " << message);
    CHECK(message.rfind("goal \"", 0) == 0);
    const bool says = message.find("is not latency_b<batch>=<fraction>") != std::string::npos ||
                      message.find("a fraction in (0, 1)") != std::string::npos;
    CHECK(says);
    CHECK(message.find("Fix: a goal such as latency_b32=0.25") != std::string::npos);
  }
  CHECK(problem(report::ReportOptions().goal("latency_b8=0.5")) ==
        "goal latency_b8=0.5 is judged at batch 8, which report.latency_batches does not time. Fix: add 8 to "
        "report.latency_batches");
}

TEST_CASE("goal: PTQ before QAT when a QAT run does not prune; rows without the figures are refused", "[budget]") {
  const auto options = report::ReportOptions().goal("latency_b32=0.5").max_drop(0.5);
  // A QAT run that does not prune: int8 is the QAT model, int8_ptq the post-training one.
  const auto g = json::parse(report::judge_goal(R"rows([
    {"row": "dense", "label": "dense", "accuracy": 93.0, "latency_ms_b32": 10.0},
    {"row": "int8", "label": "int8 (QAT)", "accuracy": 93.1, "latency_ms_b32": 3.0},
    {"row": "int8_ptq", "label": "int8 (PTQ)", "accuracy": 92.9}])rows", options));
  CHECK(g["candidates"][0]["row"] == "int8_ptq");
  CHECK(g["chosen"] == "int8_ptq");
  const auto refused = [&](const std::string& rows) { return test::message_of([&] { report::judge_goal(rows, options); }); };
  CHECK(refused(R"([{"row": "dense", "latency_ms_b32": 10.0}, {"row": "int8", "accuracy": 93, "latency_ms_b32": 3}])")
            .find("row dense has no number under \"accuracy\"") != std::string::npos);
  CHECK(refused(R"([{"row": "dense", "accuracy": 93, "latency_ms_b32": 0}])").find("is not positive") != std::string::npos);
  CHECK(refused(R"([{"row": "dense", "accuracy": 93, "latency_ms_b32": 10}, {"row": "int8", "accuracy": null}])")
            .find("row int8 has no number under \"accuracy\"") != std::string::npos);
}
