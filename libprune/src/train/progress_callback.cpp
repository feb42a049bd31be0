#include "libprune/train/progress_callback.h"

#include <chrono>
#include <iostream>
#include <string>
#include <unistd.h>

namespace libprune::train {

ProgressCallback::ProgressCallback() : tty_(::isatty(STDOUT_FILENO) != 0) {}

void ProgressCallback::on_epoch_begin(Trainer&, int64_t) {
  start_ = std::chrono::steady_clock::now();
}

void ProgressCallback::on_batch_end(Trainer& trainer, int64_t epoch, int64_t batch, double /*loss*/) {
  const int64_t total = trainer.batches_per_epoch(), done = batch + 1;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(), rate = static_cast<double>(done) / std::max(1e-9, elapsed);
  const double eta = static_cast<double>(total - done) / std::max(1e-9, rate);
  char line[200];
  if (tty_) {
    const int width = 24, filled = static_cast<int>(width * done / std::max<int64_t>(1, total));
    std::snprintf(line, sizeof line, "\repoch %3lld [%-*s] %lld/%lld %.1f batch/s loss %.4f top-1 %.1f%% ETA %.0fs ",
                  static_cast<long long>(epoch), width, std::string(static_cast<size_t>(filled), '=').c_str(),
                  static_cast<long long>(done), static_cast<long long>(total), rate, trainer.running_train_loss(),
                  trainer.running_train_top1(), eta);
    std::cout << line << std::flush;
  } else if (done % std::max<int64_t>(1, total / 4) == 0 && done < total) {
    std::snprintf(line, sizeof line, "epoch %lld: %lld/%lld batches, %.1f batch/s, loss %.4f, train top-1 %.2f%%, ETA %.0f s\n",
                  static_cast<long long>(epoch), static_cast<long long>(done), static_cast<long long>(total), rate,
                  trainer.running_train_loss(), trainer.running_train_top1(), eta);
    std::cout << line << std::flush;
  }
}

void ProgressCallback::on_epoch_end(Trainer&, const EpochMetrics& m) {
  char line[200];
  std::snprintf(line, sizeof line, "%sepoch %lld: loss %.4f, train top-1 %.2f%%, eval top-1 %.2f%% top-5 %.2f%% macro-F1 %.2f%%, lr %.4g, %.1f s\n",
                tty_ ? "\r" : "", static_cast<long long>(m.epoch), m.loss, m.train_top1, m.top1, m.top5, m.macro_f1, m.lr,
                m.seconds);
  std::cout << line;
  if (m.bytes_reduced_per_step > 0) {
    std::snprintf(line, sizeof line, "epoch %lld: data-parallel step %.1f ms, of which %.1f ms waiting for the gradient "
                  "all-reduce after backward; %.2f MB reduced per step\n", static_cast<long long>(m.epoch), m.step_ms,
                  m.allreduce_wait_ms, static_cast<double>(m.bytes_reduced_per_step) / 1e6);
    std::cout << line;
  }
  std::cout << std::flush;
}

}  // namespace libprune::train
