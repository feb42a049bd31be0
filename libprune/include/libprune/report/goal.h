#pragma once
// Compress to a target (report.goal, libprune-run --goal latency_b32=0.25 --max-drop 0.5): a run's
// rows judged against a latency goal and an accuracy limit in the recommended decision order.
#include "libprune/report/options.h"

#include <string>

namespace libprune::report {

// `rows_json`: summary.json's "rows" (objects with "row", "label", "accuracy", "latency_ms_b<N>").
// Returns summary.json's "goal" as JSON text: {"goal", "max_drop", "candidates": [{"row", "label",
// "accuracy", "drop", "latency_ratio", "verdict"}], "chosen": a row key or null}. Candidates come in
// the order the recommended pipeline tries them: int8 by post-training quantization of the dense
// model, the pruned model, its PTQ int8, its QAT int8; the first within both limits is chosen. A
// PTQ row that was not timed takes the latency of the int8 row of its architecture (the same
// kernels on the same shapes). Throws when the dense row was not timed at the goal's batch.
std::string judge_goal(const std::string& rows_json, const ReportOptions& options);

}  // namespace libprune::report
