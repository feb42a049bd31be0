#include "libprune/schedule/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

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
  TORCH_CHECK_VALUE(options_.frequency() > 0, "schedule frequency must be > 0 epochs, got ", options_.frequency(),
                    ". Fix: e.g. 1 (every epoch) or 0.25 (every quarter epoch)");
  if (options_.kind() == ScheduleKind::Agp) {
    TORCH_CHECK_VALUE(options_.end_epoch() > options_.start_epoch(), "agp schedule: end_epoch (", options_.end_epoch(),
                      ") must be after start_epoch (", options_.start_epoch(), "). Fix: e.g. start_epoch 2, end_epoch 6");
  }
  if (options_.kind() == ScheduleKind::Iterative) {
    TORCH_CHECK_VALUE(options_.steps() >= 1, "iterative schedule: steps must be >= 1, got ", options_.steps());
  }
}

namespace {
constexpr double kEps = 1e-9;
}

std::vector<std::pair<double, double>> Schedule::steps() const {
  const auto& o = options_;
  std::vector<std::pair<double, double>> out;
  switch (o.kind()) {
    case ScheduleKind::OneShot: out.emplace_back(o.start_epoch(), o.target()); break;
    case ScheduleKind::Iterative:
      for (int64_t k = 1; k <= o.steps(); ++k) {
        out.emplace_back(o.start_epoch() + static_cast<double>(k - 1) * o.frequency(),
                         o.target() * static_cast<double>(k) / static_cast<double>(o.steps()));
      }
      break;
    case ScheduleKind::Agp: {
      // s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 at t = t0, t0 + dt, ..., t0 + n dt.
      const auto n = std::max<int64_t>(1, static_cast<int64_t>(std::floor((o.end_epoch() - o.start_epoch()) / o.frequency() + kEps)));
      for (int64_t k = 0; k <= n; ++k) {
        const double progress = static_cast<double>(k) / static_cast<double>(n);
        const double s = o.target() + (o.initial() - o.target()) * std::pow(1.0 - progress, 3);
        if (s > 0) out.emplace_back(o.start_epoch() + static_cast<double>(k) * o.frequency(), s);
      }
      break;
    }
  }
  return out;
}

bool Schedule::prunes_at(double epoch) const {
  for (const auto& [t, r] : steps()) {
    if (std::abs(t - epoch) <= kEps) return true;
  }
  return false;
}

double Schedule::ratio_at(double epoch) const {
  double ratio = 0.0;
  for (const auto& [t, r] : steps()) {
    if (t <= epoch + kEps) ratio = r;
  }
  return ratio;
}

std::vector<std::pair<double, double>> Schedule::steps_between(double from, double to) const {
  std::vector<std::pair<double, double>> out;
  for (const auto& step : steps()) {
    if (step.first > from + kEps && step.first <= to + kEps) out.push_back(step);
  }
  return out;
}

double Schedule::next_step_after(double epoch) const {
  for (const auto& [t, r] : steps()) {
    if (t > epoch + kEps) return t;
  }
  return std::numeric_limits<double>::infinity();
}

}  // namespace libprune::schedule
