#pragma once
// Quantization-aware training inside a run: at `start_epoch` fake quantisers go in (quant::prepare),
// from `freeze_observers_epoch` their ranges stay fixed, and from `freeze_bn_epoch` batch norms
// normalise with their running statistics (the simulated fold then matches the int8 fold exactly).
#include "libprune/graph/trace.h"
#include "libprune/quant/quantize.h"
#include "libprune/train/metrics_log.h"
#include "libprune/train/trainer.h"

#include <functional>
#include <memory>

namespace libprune::train {

struct QatSchedule {
  TORCH_ARG(int64_t, start_epoch) = 0;
  TORCH_ARG(int64_t, freeze_observers_epoch) = -1;  // -1: never
  TORCH_ARG(int64_t, freeze_bn_epoch) = -1;         // -1: never
};

class QatCallback : public Callback {
 public:
  // `forward` runs the trainer's model once on example inputs (for placement).
  QatCallback(quant::QuantOptions options, QatSchedule schedule, graph::Forward forward);
  void on_epoch_begin(Trainer& trainer, int64_t epoch) override;
  // A resumed run: installs the quantisers when epoch `next_epoch` is past the start, so the
  // checkpoint's QAT state has somewhere to load.
  void restore(Trainer& trainer, int64_t next_epoch);
  // Runs once, just before the quantisers go in (the runner measures the pruned float model).
  std::function<void(Trainer&)> before_prepare;
  bool verbose = true;                // a line on stdout when the quantisers go in
  std::shared_ptr<MetricsLog> log;    // and a "qat" record here
  const quant::Report& report() const { return report_; }

 private:
  void install(Trainer& trainer);

  quant::QuantOptions options_;
  QatSchedule schedule_;
  graph::Forward forward_;
  quant::Report report_;
};

// Puts every batch norm of `model` in eval mode (running statistics, no updates).
void freeze_batch_norms(torch::nn::Module& model);

}  // namespace libprune::train
