#pragma once
// Runs a recipe end to end: build the data and the model, train with the pruning stages on their
// schedules, checkpoint every epoch, then measure dense against pruned (params, MACs, file size,
// latency at batch 1 and 32, accuracy), print the table and write <output_dir>/summary.json.
#include <string>
#include <vector>

namespace libprune::recipe {

struct RunOptions {
  std::vector<std::string> sets;  // "key.path=value" overrides
  bool resume = false;            // continue from <output_dir>/last.ckpt
  bool print = true;              // progress and the final table on stdout
  // Stops (like SIGINT) once this many epochs have completed and been checkpointed; 0: never.
  // Tests use it to kill a run at a known point.
  int64_t stop_after_epochs = 0;
};

struct RunResult {
  bool completed = false;    // false: stopped early (SIGINT); the last checkpoint stays loadable
  std::string summary_json;  // what summary.json holds (empty when not completed)
  std::string output_dir;
};

RunResult run(const std::string& recipe_path, const RunOptions& options = {});

}  // namespace libprune::recipe
