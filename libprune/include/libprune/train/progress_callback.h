#pragma once
// Progress on stdout: a redrawn bar on a terminal, plain lines otherwise.
#include "libprune/train/trainer.h"

#include <chrono>

namespace libprune::train {

// A bar per epoch on a terminal (batches/s, loss, accuracy, ETA); plain lines otherwise.
class ProgressCallback : public Callback {
 public:
  // A redrawn bar when stdout is a terminal, else a plain line every quarter epoch.
  ProgressCallback();
  explicit ProgressCallback(bool terminal) : tty_(terminal) {}
  void on_epoch_begin(Trainer& trainer, int64_t epoch) override;
  void on_batch_end(Trainer& trainer, int64_t epoch, int64_t batch, double loss) override;
  void on_epoch_end(Trainer& trainer, const EpochMetrics& m) override;

 private:
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace libprune::train
