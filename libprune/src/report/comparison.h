#pragma once
// Dense against pruned, as a recipe run reports them: accuracy, parameters, MACs, file size and
// latency. The dense figures are taken just before the first cut (or from a checkpoint when the run
// resumes); both models are timed at the end, side by side in interleaved rounds, because the
// machine is shared and figures minutes apart do not compare.
#include "libprune/report/options.h"
#include "libprune/train/trainer.h"

#include <nlohmann/json.hpp>

#include <functional>

namespace libprune::report::detail {

using json = nlohmann::json;

class Comparison {
 public:
  // `build` makes a fresh model of the run's architecture (for the dense copy).
  Comparison(train::Trainer& trainer, std::function<models::ModelPtr()> build, ReportOptions options);
  // Records the dense figures and keeps a copy of the weights for timing; once, before the first cut.
  void record_dense();
  // A resumed run's dense figures (its weights are gone: the architecture is timed, freshly built).
  void restore_dense(const json& dense) { dense_ = dense; }
  // Takes the pruned figures, then times both models side by side.
  void finish();
  const json& dense() const { return dense_; }
  const json& pruned() const { return pruned_; }

 private:
  json measure();
  void keep_dense(bool copy_weights);
  void time(models::ModelPtr net, json& out);

  train::Trainer& trainer_;
  std::function<models::ModelPtr()> build_;
  ReportOptions options_;
  json dense_, pruned_;
  models::ModelPtr dense_copy_;
};

}  // namespace libprune::report::detail
