#pragma once
// Network slimming's sparsity penalty on batch-norm scales; the Trainer adds it when bn_l1 > 0.
#include "libprune/train/trainer.h"

namespace libprune::train {

// Adds lambda * sign(gamma) to every BatchNorm scale's gradient (network slimming's sparsity
// penalty), so the bn_scale criterion finds channels to cut.
class BnL1Penalty : public Callback {
 public:
  explicit BnL1Penalty(double lambda) : lambda_(lambda) {}
  void on_after_backward(Trainer& trainer, int64_t epoch, int64_t batch) override;

 private:
  double lambda_;
};

}  // namespace libprune::train
