#pragma once
// How much to prune, and when: the target ratio at each epoch for one-shot, iterative and AGP
// (Zhu & Gupta 2017) schedules. A Pruner then cuts to that ratio (counted against the original
// sizes), so steps compose to the same total as one step.
//
// Times are in epochs and may be fractional: 4 is the start of epoch 4 (before its first batch),
// 4.25 is after a quarter of its batches. So `frequency: 0.125` prunes every eighth of an epoch,
// and train::PruningCallback cuts between batches (steps) as well as between epochs.
#include <torch/torch.h>

#include <string>
#include <vector>

namespace libprune::schedule {

enum class ScheduleKind { OneShot, Iterative, Agp };

// "one_shot", "iterative", "agp"; anything else throws naming the value and the choices.
ScheduleKind parse_schedule(const std::string& name);
const char* to_string(ScheduleKind kind);

struct ScheduleOptions {
  ScheduleOptions() = default;
  TORCH_ARG(ScheduleKind, kind) = ScheduleKind::OneShot;
  TORCH_ARG(double, target) = 0.5;         // final ratio s_f
  TORCH_ARG(double, initial) = 0.0;        // s_i (AGP)
  TORCH_ARG(double, start_epoch) = 0;      // t0: the first pruning time
  TORCH_ARG(double, end_epoch) = 0;        // the last pruning time (AGP)
  TORCH_ARG(double, frequency) = 1;        // epochs between steps (AGP: delta t; iterative)
  TORCH_ARG(int64_t, steps) = 1;           // iterative: number of equal steps
};

class Schedule {
 public:
  explicit Schedule(ScheduleOptions options);
  // Whether a pruning step runs at time `epoch` (within 1e-9), and the total ratio reached by then.
  bool prunes_at(double epoch) const;
  double ratio_at(double epoch) const;
  // Every (time, ratio) step, in order.
  std::vector<std::pair<double, double>> steps() const;
  // The steps with from < time <= to (within 1e-9): those due during one batch.
  std::vector<std::pair<double, double>> steps_between(double from, double to) const;
  // The first step after `epoch` (with time > epoch + 1e-9); infinity when there is none.
  double next_step_after(double epoch) const;
  const ScheduleOptions& options() const { return options_; }

 private:
  ScheduleOptions options_;
};

}  // namespace libprune::schedule
