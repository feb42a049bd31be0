#pragma once
// How much to prune, and when: the target ratio at each epoch for one-shot, iterative and AGP
// (Zhu & Gupta 2017) schedules. A Pruner then cuts to that ratio (counted against the original
// sizes), so steps compose to the same total as one step.
//
// Times are in epochs and may be fractional: 4 is the start of epoch 4 (before its first batch),
// 4.25 is after a quarter of its batches. So `frequency: 0.125` prunes every eighth of an epoch,
// and train::PruningCallback cuts between batches (steps) as well as between epochs.
#include "libprune/options.h"

#include <torch/torch.h>

#include <string>
#include <vector>

namespace libprune::schedule {

enum class ScheduleKind { OneShot, Iterative, Agp };

// "one_shot", "iterative", "agp"; anything else throws naming the value and the choices.
ScheduleKind parse_schedule(const std::string& name);
const char* to_string(ScheduleKind kind);

// X("key", type, field, default, check, "meaning"); see libprune/options.h. In a recipe the stage's
// `ratio` is the schedule's, and the other keys sit in pruning.N.schedule.
#define LIBPRUNE_SCHEDULE_OPTIONS(X)                                                                                   \
  X("kind", ::libprune::schedule::ScheduleKind, kind, ::libprune::schedule::ScheduleKind::OneShot, nullptr,             \
    "one_shot (once, at start_epoch), iterative (steps equal steps, frequency epochs apart), agp (cubic, Zhu & Gupta, " \
    "from start_epoch to end_epoch)")                                                                                   \
  X("ratio", double, ratio, 0.5, ::libprune::options::check::fraction("e.g. 0.5 removes half of the channels"),          \
    "the ratio reached at the last step")                                                                               \
  X("initial_ratio", double, initial_ratio, 0.0,                                                                        \
    ::libprune::options::check::fraction("e.g. 0 (AGP starts from the dense model)"), "agp: the ratio it starts from")   \
  X("start_epoch", double, start_epoch, 0, ::libprune::options::check::at_least<double>(0, "e.g. 2"),                   \
    "the first step's time in epochs: a whole number cuts at the start of that epoch, 4.25 a quarter into epoch 4")     \
  X("end_epoch", double, end_epoch, 0, nullptr, "agp: the last step's time")                                           \
  X("frequency", double, frequency, 1, ::libprune::options::check::positive("e.g. 1 (every epoch) or 0.25"),            \
    "epochs between steps (agp, iterative); fractions cut between batches")                                             \
  X("steps", int64_t, steps, 1, ::libprune::options::check::at_least<int64_t>(1, "e.g. 3"), "iterative: how many steps")

struct ScheduleOptions {
  ScheduleOptions() = default;
  LIBPRUNE_SCHEDULE_OPTIONS(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<ScheduleOptions>>& specs();
  static const std::vector<options::Renamed>& renamed();
  // Every option's check, then initial_ratio <= ratio and (agp) end_epoch after start_epoch.
  void validate() const;
  std::string problem(std::string* key) const;
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

namespace libprune::options {
template <>
struct EnumNames<schedule::ScheduleKind> {
  static constexpr const char* what = "schedule";
  static constexpr const char* names[] = {"one_shot", "iterative", "agp"};
};
}  // namespace libprune::options
