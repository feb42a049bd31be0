#pragma once
// Pruning on a schedule, inside training: cuts between epochs and between batches.
#include "libprune/prune/pruner.h"
#include "libprune/schedule/schedule.h"
#include "libprune/train/metrics_log.h"
#include "libprune/train/plan_history.h"
#include "libprune/train/trainer.h"

#include <functional>
#include <memory>

namespace libprune::train {

class PruningCallback : public Callback {
 public:
  // Cuts at the schedule's times to the schedule's ratio; training goes on with the same
  // optimizer. Whole epochs cut before the epoch trains (after the previous one is evaluated);
  // fractional times (4.25) cut between the batches where they fall. With a gradient criterion
  // (taylor, mask_grad), gradients are accumulated over the last `taylor_batches` batches before
  // each step, right after backward (before clipping and the optimizer step).
  PruningCallback(std::shared_ptr<prune::Pruner> pruner, schedule::Schedule schedule,
                  std::shared_ptr<PlanHistory> plans, std::shared_ptr<MetricsLog> log = nullptr,
                  int64_t taylor_batches = 0);
  void on_epoch_begin(Trainer& trainer, int64_t epoch) override;
  void on_after_backward(Trainer& trainer, int64_t epoch, int64_t batch) override;
  void on_batch_end(Trainer& trainer, int64_t epoch, int64_t batch, double loss) override;
  // Runs once, just before the first cut of any stage (the runner records the dense model).
  std::function<void(Trainer&)> before_first_cut;
  bool verbose = true;  // a line per cut on stdout

 private:
  void cut(Trainer& trainer, double time);
  void accumulate(Trainer& trainer);  // this batch's gradients into taylor_

  std::shared_ptr<prune::Pruner> pruner_;
  schedule::Schedule schedule_;
  std::shared_ptr<PlanHistory> plans_;
  std::shared_ptr<MetricsLog> log_;
  int64_t taylor_batches_;
  importance::Gradients taylor_;
};

}  // namespace libprune::train
