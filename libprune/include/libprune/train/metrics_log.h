#pragma once
// The JSON-lines metrics log (<output_dir>/metrics.jsonl) and the callback that writes a record per epoch.
#include "libprune/train/trainer.h"

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>

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

}  // namespace libprune::train
