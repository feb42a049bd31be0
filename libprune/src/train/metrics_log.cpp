#include "libprune/train/metrics_log.h"

#include "libprune/options.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>

namespace libprune::train {

MetricsLog::MetricsLog(const std::string& path, bool append) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  TORCH_CHECK(file_, "cannot open metrics log '", path, "': ", std::strerror(errno),
              ". Fix: check that output_dir exists and is writable");
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const std::string& type, const std::map<std::string, double>& fields) {
  nlohmann::json j = {{"type", type}};
  for (const auto& [k, v] : fields) {
    if (options::is_whole(v)) {
      j[k] = static_cast<int64_t>(v);
    } else {
      j[k] = v;
    }
  }
  const std::string line = j.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

void LogCallback::on_epoch_end(Trainer& trainer, const EpochMetrics& m) {
  const auto [params, macs] = measure_size(trainer);
  std::map<std::string, double> fields{{"epoch", static_cast<double>(m.epoch)},
                                       {"loss", m.loss},
                                       {"train_top1", m.train_top1},
                                       {"top1", m.top1},
                                       {"top5", m.top5},
                                       {"macro_f1", m.macro_f1},
                                       {"lr", m.lr},
                                       {"params", static_cast<double>(params)},
                                       {"macs", static_cast<double>(macs)},
                                       {"seconds", m.seconds}};
  if (ratio_) fields["ratio"] = ratio_(static_cast<double>(m.epoch + 1));
  fields["step_ms"] = m.step_ms;
  if (m.bytes_reduced_per_step > 0) {
    fields["allreduce_wait_ms"] = m.allreduce_wait_ms;
    fields["bytes_reduced_per_step"] = static_cast<double>(m.bytes_reduced_per_step);
  }
  log_->write("epoch", fields);
}

}  // namespace libprune::train
