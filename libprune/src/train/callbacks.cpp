#include "libprune/train/callbacks.h"

#include "libprune/io/checkpoint.h"
#include "libprune/nn/memory_format.h"
#include "libprune/measure/count_ops.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <unistd.h>

namespace libprune::train {
namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

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
    if (std::floor(v) == v && std::fabs(v) < 9e15) {
      j[k] = static_cast<int64_t>(v);
    } else {
      j[k] = v;
    }
  }
  const std::string line = j.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

std::string plans_to_json(const PlanHistory& plans) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& p : plans) arr.push_back(nlohmann::json::parse(p.to_json()));
  return arr.dump();
}

PlanHistory plans_from_json(const std::string& json) {
  PlanHistory out;
  for (const auto& p : nlohmann::json::parse(json)) out.push_back(layers::PruningPlan::from_json(p.dump()));
  return out;
}

std::pair<int64_t, int64_t> measure_size(Trainer& trainer) {
  auto model = trainer.model();
  const auto c = measure::count_ops(model, trainer.example(1));
  return {c.params, c.macs};
}

PruningCallback::PruningCallback(std::shared_ptr<prune::Pruner> pruner, schedule::Schedule schedule,
                                 std::shared_ptr<PlanHistory> plans, std::shared_ptr<MetricsLog> log,
                                 int64_t taylor_batches)
    : pruner_(std::move(pruner)), schedule_(std::move(schedule)), plans_(std::move(plans)), log_(std::move(log)),
      taylor_batches_(taylor_batches) {}

void PruningCallback::on_batch_end(Trainer& trainer, int64_t epoch, int64_t batch, double) {
  const double per = static_cast<double>(std::max<int64_t>(1, trainer.batches_per_epoch()));
  const double from = static_cast<double>(epoch) + static_cast<double>(batch) / per;
  const double to = static_cast<double>(epoch) + static_cast<double>(batch + 1) / per;
  // Taylor: accumulate over the last `taylor_batches` batches before the next cut.
  if (taylor_batches_ > 0) {
    const double next = schedule_.next_step_after(from);
    if (next - to < static_cast<double>(taylor_batches_) / per - 1e-9) {
      std::vector<std::pair<std::string, torch::Tensor>> params;
      for (const auto& p : trainer.model()->named_parameters()) params.emplace_back(p.key(), p.value());
      importance::accumulate_taylor(params, taylor_);
    }
  }
  // Steps due during this batch, inside the epoch: cut now, between this batch and the next. A step
  // at the epoch's end (epoch + 1) is left to on_epoch_begin, after the epoch's evaluation.
  const auto due = schedule_.steps_between(from, to);
  if (!due.empty() && due.back().first < static_cast<double>(epoch + 1) - 1e-9) cut(trainer, due.back().first);
}

void PruningCallback::on_epoch_begin(Trainer& trainer, int64_t epoch) {
  if (schedule_.prunes_at(static_cast<double>(epoch))) cut(trainer, static_cast<double>(epoch));
}

void PruningCallback::cut(Trainer& trainer, double time) {
  if (before_first_cut && plans_->empty()) before_first_cut(trainer);
  const auto t0 = now();
  const double ratio = schedule_.ratio_at(time);
  pruner_->set_ratio(ratio);
  pruner_->set_gradients(taylor_.empty() ? nullptr : &taylor_);
  const auto plan = pruner_->step(&trainer.optimizer());
  pruner_->set_gradients(nullptr);
  taylor_.clear();
  plans_->push_back(plan);
  // Cut tensors come back in the default layout.
  if (trainer.options().channels_last() && trainer.device().is_cpu()) {
    nn::to_memory_format(*trainer.model(), torch::MemoryFormat::ChannelsLast);
  }
  const auto [params, macs] = measure_size(trainer);
  const double seconds = now() - t0;
  if (verbose) std::cout << "prune  epoch " << time << ": ratio " << ratio << ", " << plan.groups.size()
            << " groups cut, params " << params << ", MACs " << macs << " (" << seconds << " s)" << std::endl;
  if (log_) {
    log_->write("prune", {{"epoch", time},
                          {"ratio", ratio},
                          {"groups_cut", static_cast<double>(plan.groups.size())},
                          {"params", static_cast<double>(params)},
                          {"macs", static_cast<double>(macs)},
                          {"seconds", seconds}});
  }
}

CheckpointCallback::CheckpointCallback(std::string dir, std::string recipe_id, std::shared_ptr<PlanHistory> plans,
                                       double best_top1, std::function<std::string()> extra)
    : dir_(std::move(dir)), recipe_id_(std::move(recipe_id)), plans_(std::move(plans)), best_(best_top1),
      extra_(std::move(extra)) {}

void CheckpointCallback::on_epoch_end(Trainer& trainer, const EpochMetrics& m) {
  io::CheckpointMeta meta;
  meta.epoch = m.epoch + 1;
  meta.recipe_id = recipe_id_;
  meta.plans_json = plans_to_json(*plans_);
  const bool best = m.top1 > best_;
  if (best) best_ = m.top1;
  meta.best_top1 = best_;
  if (extra_) meta.extra_json = extra_();
  const auto dir = std::filesystem::path(dir_);
  std::vector<std::string> paths{(dir / "last.ckpt").string()};
  if (best) paths.push_back((dir / "best.ckpt").string());
  io::save_checkpoint(paths, *trainer.model(), trainer.optimizer(), meta);
}

void LogCallback::on_epoch_end(Trainer& trainer, const EpochMetrics& m) {
  const auto [params, macs] = measure_size(trainer);
  std::map<std::string, double> fields{{"epoch", static_cast<double>(m.epoch)},
                                       {"loss", m.loss},
                                       {"train_top1", m.train_top1},
                                       {"top1", m.top1},
                                       {"top5", m.top5},
                                       {"lr", m.lr},
                                       {"params", static_cast<double>(params)},
                                       {"macs", static_cast<double>(macs)},
                                       {"seconds", m.seconds}};
  if (ratio_) fields["ratio"] = ratio_(static_cast<double>(m.epoch + 1));
  log_->write("epoch", fields);
}

ProgressCallback::ProgressCallback() : tty_(::isatty(STDOUT_FILENO) != 0) {}

void ProgressCallback::on_epoch_begin(Trainer&, int64_t) {
  start_ = now();
}

void ProgressCallback::on_batch_end(Trainer& trainer, int64_t epoch, int64_t batch, double /*loss*/) {
  const int64_t total = trainer.batches_per_epoch(), done = batch + 1;
  const double elapsed = now() - start_, rate = static_cast<double>(done) / std::max(1e-9, elapsed);
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
  std::snprintf(line, sizeof line, "%sepoch %lld: loss %.4f, train top-1 %.2f%%, eval top-1 %.2f%% top-5 %.2f%%, lr %.4g, %.1f s\n",
                tty_ ? "\r" : "", static_cast<long long>(m.epoch), m.loss, m.train_top1, m.top1, m.top5, m.lr, m.seconds);
  std::cout << line << std::flush;
}

void BnL1Penalty::on_after_backward(Trainer& trainer, int64_t, int64_t) {
  torch::NoGradGuard no_grad;
  for (const auto& m : trainer.model()->modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      if (bn->weight.defined() && bn->weight.grad().defined()) bn->weight.grad().add_(bn->weight.sign(), lambda_);
    }
  }
}

}  // namespace libprune::train
