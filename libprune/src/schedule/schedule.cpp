#include "libprune/schedule/schedule.h"

#include <cmath>

namespace libprune::schedule {

ScheduleKind parse_schedule(const std::string& name) {
  if (name == "one_shot") return ScheduleKind::OneShot;
  if (name == "iterative") return ScheduleKind::Iterative;
  if (name == "agp") return ScheduleKind::Agp;
  TORCH_CHECK_VALUE(false, "unknown schedule \"", name, "\"; expected one of one_shot, iterative, agp");
  return ScheduleKind::OneShot;
}

const char* to_string(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::OneShot: return "one_shot";
    case ScheduleKind::Iterative: return "iterative";
    case ScheduleKind::Agp: return "agp";
  }
  return "?";
}

Schedule::Schedule(ScheduleOptions o) : options_(std::move(o)) {
  TORCH_CHECK_VALUE(options_.target() >= 0 && options_.target() < 1, "schedule target must be in [0, 1), got ",
                    options_.target(), ". Fix: e.g. 0.5 removes half of the channels");
  TORCH_CHECK_VALUE(options_.initial() >= 0 && options_.initial() <= options_.target(),
                    "schedule initial ratio must be in [0, target], got ", options_.initial());
  TORCH_CHECK_VALUE(options_.start_epoch() >= 0, "schedule start_epoch must be >= 0, got ", options_.start_epoch());
  TORCH_CHECK_VALUE(options_.frequency() >= 1, "schedule frequency must be >= 1 epoch, got ", options_.frequency());
  if (options_.kind() == ScheduleKind::Agp) {
    TORCH_CHECK_VALUE(options_.end_epoch() > options_.start_epoch(), "agp schedule: end_epoch (", options_.end_epoch(),
                      ") must be after start_epoch (", options_.start_epoch(), "). Fix: e.g. start_epoch 2, end_epoch 6");
  }
  if (options_.kind() == ScheduleKind::Iterative) {
    TORCH_CHECK_VALUE(options_.steps() >= 1, "iterative schedule: steps must be >= 1, got ", options_.steps());
  }
}

std::vector<std::pair<int64_t, double>> Schedule::steps() const {
  const auto& o = options_;
  std::vector<std::pair<int64_t, double>> out;
  switch (o.kind()) {
    case ScheduleKind::OneShot: out.emplace_back(o.start_epoch(), o.target()); break;
    case ScheduleKind::Iterative:
      for (int64_t k = 1; k <= o.steps(); ++k) {
        out.emplace_back(o.start_epoch() + (k - 1) * o.frequency(), o.target() * static_cast<double>(k) / static_cast<double>(o.steps()));
      }
      break;
    case ScheduleKind::Agp: {
      // s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 at t = t0, t0 + dt, ..., t0 + n dt.
      const int64_t n = std::max<int64_t>(1, (o.end_epoch() - o.start_epoch()) / o.frequency());
      for (int64_t k = 0; k <= n; ++k) {
        const double progress = static_cast<double>(k) / static_cast<double>(n);
        const double s = o.target() + (o.initial() - o.target()) * std::pow(1.0 - progress, 3);
        if (s > 0) out.emplace_back(o.start_epoch() + k * o.frequency(), s);
      }
      break;
    }
  }
  return out;
}

bool Schedule::prunes_at(int64_t epoch) const {
  for (const auto& [e, r] : steps()) {
    if (e == epoch) return true;
  }
  return false;
}

double Schedule::ratio_at(int64_t epoch) const {
  double ratio = 0.0;
  for (const auto& [e, r] : steps()) {
    if (e <= epoch) ratio = r;
  }
  return ratio;
}

}  // namespace libprune::schedule
