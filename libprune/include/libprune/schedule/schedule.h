#pragma once
// How much to prune, and when: the target ratio at each epoch for one-shot, iterative and AGP
// (Zhu & Gupta 2017) schedules. A Pruner then cuts to that ratio (counted against the original
// sizes), so steps compose to the same total as one step.
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
  TORCH_ARG(int64_t, start_epoch) = 0;     // t0: the first pruning epoch
  TORCH_ARG(int64_t, end_epoch) = 0;       // the last pruning epoch (AGP, iterative)
  TORCH_ARG(int64_t, frequency) = 1;       // epochs between steps (AGP: delta t)
  TORCH_ARG(int64_t, steps) = 1;           // iterative: number of equal steps
};

class Schedule {
 public:
  explicit Schedule(ScheduleOptions options);
  // Whether a pruning step runs at the start of `epoch`, and to which total ratio.
  bool prunes_at(int64_t epoch) const;
  double ratio_at(int64_t epoch) const;
  // Every (epoch, ratio) step, in order.
  std::vector<std::pair<int64_t, double>> steps() const;
  const ScheduleOptions& options() const { return options_; }

 private:
  ScheduleOptions options_;
};

}  // namespace libprune::schedule
