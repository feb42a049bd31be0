#pragma once
// Checkpoints after every epoch: <dir>/last.ckpt, and <dir>/best.ckpt when top-1 improves.
#include "libprune/train/plan_history.h"
#include "libprune/train/trainer.h"

#include <functional>
#include <memory>
#include <string>

namespace libprune::train {

class CheckpointCallback : public Callback {
 public:
  // Writes <dir>/last.ckpt after every epoch and <dir>/best.ckpt when top-1 improves.
  // `extra` returns the caller's JSON record to keep in the header.
  CheckpointCallback(std::string dir, std::string recipe_id, std::shared_ptr<PlanHistory> plans, double best_top1 = -1,
                     std::function<std::string()> extra = {});
  void on_epoch_end(Trainer& trainer, const EpochMetrics& m) override;
  double best_top1() const { return best_; }

 private:
  std::string dir_, recipe_id_;
  std::shared_ptr<PlanHistory> plans_;
  double best_;
  std::function<std::string()> extra_;
};

}  // namespace libprune::train
