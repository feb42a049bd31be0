#pragma once
// The rows a recipe run reports: dense, pruned, int8 and pruned+int8, each with accuracy, parameters,
// MACs, file size and latency. The dense figures are taken just before the first cut, the pruned ones
// when QAT starts (or at the end), the int8 ones after conversion; a checkpoint keeps the figures so a
// resumed run reports them. Every timed row is timed at the end, side by side in interleaved rounds,
// because the machine is shared and figures minutes apart do not compare.
#include "libprune/quant/quantize.h"
#include "libprune/report/options.h"
#include "libprune/train/plan_history.h"
#include "libprune/train/trainer.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <ostream>
#include <memory>
#include <string>
#include <vector>

namespace libprune::report::detail {

using json = nlohmann::json;

// What a run quantises: nothing, the final model by post-training calibration, or by QAT.
struct QuantPlan {
  enum class Mode { none, ptq, qat } mode = Mode::none;
  bool compare = true;  // also convert the dense (and, after QAT, the pruned) model by PTQ
  quant::QuantOptions options;
  int64_t calibration_batches = 16;
  quant::Observer calibration_observer = quant::Observer::min_max;
  std::string engine = "onednn";
  int64_t simulate_bits = 0, simulate_epochs = 1;  // the simulated low-bit QAT row (0: none)
  int64_t qat_start_epoch = 0;
  int64_t keep_float_worst = 0;  // the final PTQ row also keeps float the units the quantization scan ranks worst at 8 bits
};

// out["argmax_agreement_with_<against>"] and out["logit_cosine_with_<against>"]: `int8`'s logits against
// `reference`'s, image by image, summed over the process group's ranks.
void agreement(json& out, const torch::Tensor& reference, const torch::Tensor& int8, const std::string& against,
               const std::shared_ptr<dist::ProcessGroup>& group);

struct Row {
  std::string key, label;  // "pruned_int8", "pruned+int8"
  json figures;            // accuracy, top5, params, macs, size_bytes, latency_ms_b<N>, ...
  models::ModelPtr model;  // timed at the end; null for an accuracy-only row
  bool architecture_only = false;  // `model` was rebuilt to time a row restored from a checkpoint: not its weights
};

class Comparison {
 public:
  // `build` makes a fresh model of the run's architecture; `plans` are the run's cuts so far.
  Comparison(train::Trainer& trainer, std::function<models::ModelPtr()> build, ReportOptions options,
             std::shared_ptr<const train::PlanHistory> plans, bool prunes, QuantPlan quant = {});
  // The dense figures and a copy of the weights; once, before the first cut (or before QAT).
  void record_dense();
  // The pruned float figures and a copy; once, when QAT starts.
  void record_pruned();
  // The simulated low-bit QAT row (QuantPlan::simulate_bits), from the QAT model, before it converts.
  void simulated_row(const std::string& float_key);
  // The figures measured so far (a checkpoint keeps them) and their restore on resume.
  json saved() const;
  void restore(const json& saved);
  // Converts or measures what is left, then times every row side by side. The timed rows keep their
  // models (a goal may save the chosen one) until release_models().
  void finish();
  void release_models();
  const std::vector<Row>& rows() const { return rows_; }
  // The run's final int8 model after finish() (null without quantization), to save.
  models::ModelPtr final_int8() const { return final_int8_; }
  const json& figures(const std::string& key) const;
  // The sensitivity scan of the model before the first cut (prune::Sensitivity's JSON; null: none),
  // kept in checkpoints with the figures.
  void set_sensitivity(json scan) { sensitivity_ = std::move(scan); }
  const json& sensitivity() const { return sensitivity_; }
  // The quantization sensitivity scan (report.quant_sensitivity_bits) of a float copy of the trainer's
  // model, once: before QAT prepares it, or in finish() before PTQ. Kept in checkpoints too.
  void scan_quantization();
  const json& quant_sensitivity() const { return quant_sensitivity_; }
  // Where the scan's table is printed (null: nowhere).
  std::ostream* printed_to = nullptr;

 private:
  // One pass over the eval set: `model`'s logits, in order, and its accuracy.
  struct Evaluated {
    torch::Tensor logits;
    train::Evaluation figures;
  };
  Evaluated evaluate(const models::ModelPtr& model);
  // Accuracy and file size of `model` (the trainer's own: its last evaluation; `done`: that pass);
  // params and MACs counted on a float model, or taken from the float row `float_key` for an int8 one.
  json measure(const models::ModelPtr& model, const std::string& float_key = "", const Evaluated* done = nullptr);
  // A float copy of `from` (with the run's cuts so far when `with_plans`; extension state stays behind).
  models::ModelPtr copy(const models::ModelPtr& from, bool with_plans);
  // The row `key`, added in display order when new.
  Row& row(const std::string& key);
  bool has(const std::string& key) const;
  // A copy of `from` converted by post-training quantization, measured under `key`.
  // `kept` and the units the quantization scan ranks worst at 8 bits (QuantPlan::keep_float_worst).
  quant::Names with_worst_units(quant::Names kept) const;
  void ptq_row(const models::ModelPtr& from, bool with_plans, const std::string& key, const std::string& float_key,
               bool timed);
  void time(const models::ModelPtr& net, json& out);
  graph::Forward example_forward(const models::ModelPtr& model);
  std::string final_key() const;

  train::Trainer& trainer_;
  std::function<models::ModelPtr()> build_;
  ReportOptions options_;
  std::shared_ptr<const train::PlanHistory> plans_;
  bool prunes_;
  QuantPlan quant_;
  std::vector<Row> rows_;
  json sensitivity_, quant_sensitivity_;
  models::ModelPtr final_int8_;
};

}  // namespace libprune::report::detail
