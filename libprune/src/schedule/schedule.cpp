#include "libprune/schedule/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace libprune::schedule {

ScheduleKind parse_schedule(const std::string& name) { return options::parse<ScheduleKind>(name); }

const char* to_string(ScheduleKind kind) { return options::name_of(kind); }

LIBPRUNE_DEFINE_OPTION_SPECS(ScheduleOptions, LIBPRUNE_SCHEDULE_OPTIONS)

const std::vector<options::Renamed>& ScheduleOptions::renamed() {
  static const std::vector<options::Renamed> list{{"target", "ratio"}, {"initial", "initial_ratio"}};
  return list;
}

namespace {
std::string cross_check(const ScheduleOptions& o, std::string* key) {
  if (o.initial_ratio() > o.ratio()) {
    *key = "initial_ratio";
    return "initial_ratio " + options::format_number(o.initial_ratio()) + " is above the final ratio " +
           options::format_number(o.ratio()) + ". Fix: start below the ratio you end at";
  }
  if (o.kind() == ScheduleKind::Agp && o.end_epoch() <= o.start_epoch()) {
    *key = "end_epoch";
    return "agp schedule: end_epoch (" + options::format_number(o.end_epoch()) + ") must be after start_epoch (" +
           options::format_number(o.start_epoch()) + "). Fix: e.g. start_epoch 2, end_epoch 6";
  }
  return {};
}
}  // namespace

std::string ScheduleOptions::problem(std::string* key) const {
  return options::first_problem<ScheduleOptions>(specs(), *this, cross_check, key);
}

void ScheduleOptions::validate() const { options::validate<ScheduleOptions>(specs(), *this, "schedule ", cross_check); }

Schedule::Schedule(ScheduleOptions o) : options_(std::move(o)) { options_.validate(); }

namespace {
constexpr double kEps = 1e-9;
}

std::vector<std::pair<double, double>> Schedule::steps() const {
  const auto& o = options_;
  std::vector<std::pair<double, double>> out;
  switch (o.kind()) {
    case ScheduleKind::OneShot: out.emplace_back(o.start_epoch(), o.ratio()); break;
    case ScheduleKind::Iterative:
      for (int64_t k = 1; k <= o.steps(); ++k) {
        out.emplace_back(o.start_epoch() + static_cast<double>(k - 1) * o.frequency(),
                         o.ratio() * static_cast<double>(k) / static_cast<double>(o.steps()));
      }
      break;
    case ScheduleKind::Agp: {
      // s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 at t = t0, t0 + dt, ..., t0 + n dt.
      const auto n = std::max<int64_t>(1, static_cast<int64_t>(std::floor((o.end_epoch() - o.start_epoch()) / o.frequency() + kEps)));
      for (int64_t k = 0; k <= n; ++k) {
        const double progress = static_cast<double>(k) / static_cast<double>(n);
        const double s = o.ratio() + (o.initial_ratio() - o.ratio()) * std::pow(1.0 - progress, 3);
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
