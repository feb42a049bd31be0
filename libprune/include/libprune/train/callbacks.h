#pragma once
// The Trainer's standard callbacks: pruning on a schedule, checkpoints (last and best), a
// JSON-lines metrics log, a progress bar, and the L1 penalty on BN scales (network slimming).
#include "libprune/prune/pruner.h"
#include "libprune/schedule/schedule.h"
#include "libprune/train/trainer.h"

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace libprune::train {

// One JSON object per line: {"type": ..., fields...}; flushed after every record.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path, bool append = false);
  ~MetricsLog();
  void write(const std::string& type, const std::map<std::string, double>& fields);

 private:
  std::FILE* file_ = nullptr;
};

// Plans applied so far, shared by the pruning stages and the checkpoints.
using PlanHistory = std::vector<layers::PruningPlan>;
std::string plans_to_json(const PlanHistory& plans);
PlanHistory plans_from_json(const std::string& json);

// params and MACs of the trainer's model on one example.
std::pair<int64_t, int64_t> measure_size(Trainer& trainer);

class PruningCallback : public Callback {
 public:
  // Cuts at the schedule's times to the schedule's ratio; training goes on with the same
  // optimizer. Whole epochs cut before the epoch trains (after the previous one is evaluated);
  // fractional times (4.25) cut between the batches where they fall. With the "taylor" criterion,
  // |w * dL/dw| is accumulated over the last `taylor_batches` batches before each step.
  PruningCallback(std::shared_ptr<prune::Pruner> pruner, schedule::Schedule schedule,
                  std::shared_ptr<PlanHistory> plans, std::shared_ptr<MetricsLog> log = nullptr,
                  int64_t taylor_batches = 0);
  void on_epoch_begin(Trainer& trainer, int64_t epoch) override;
  void on_batch_end(Trainer& trainer, int64_t epoch, int64_t batch, double loss) override;
  // Runs once, just before the first cut of any stage (the runner records the dense model).
  std::function<void(Trainer&)> before_first_cut;
  bool verbose = true;  // a line per cut on stdout

 private:
  void cut(Trainer& trainer, double time);

  std::shared_ptr<prune::Pruner> pruner_;
  schedule::Schedule schedule_;
  std::shared_ptr<PlanHistory> plans_;
  std::shared_ptr<MetricsLog> log_;
  int64_t taylor_batches_;
  importance::Gradients taylor_;
};

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

class LogCallback : public Callback {
 public:
  // `ratio`, when given, maps a time (in epochs) to the pruning ratio reached before it; each
  // epoch's record then carries the ratio its model was trained at.
  explicit LogCallback(std::shared_ptr<MetricsLog> log, std::function<double(double)> ratio = {})
      : log_(std::move(log)), ratio_(std::move(ratio)) {}
  void on_epoch_end(Trainer& trainer, const EpochMetrics& m) override;

 private:
  std::shared_ptr<MetricsLog> log_;
  std::function<double(double)> ratio_;
};

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
  double start_ = 0;
};

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
