#include "libprune/train/pruning_callback.h"

#include "libprune/nn/memory_format.h"
#include "libprune/nn/random_guard.h"

#include <chrono>
#include <cmath>
#include <iostream>
#include <tuple>

namespace libprune::train {

PruningCallback::PruningCallback(std::shared_ptr<prune::Pruner> pruner, schedule::Schedule schedule,
                                 std::shared_ptr<PlanHistory> plans, std::shared_ptr<MetricsLog> log,
                                 int64_t taylor_batches)
    : pruner_(std::move(pruner)), schedule_(std::move(schedule)), plans_(std::move(plans)), log_(std::move(log)),
      taylor_batches_(taylor_batches) {}

namespace {

// Batches per epoch, and the fractional epochs where batch `batch` of `epoch` starts and ends.
std::tuple<double, double, double> batch_span(Trainer& trainer, int64_t epoch, int64_t batch) {
  const double per = static_cast<double>(std::max<int64_t>(1, trainer.batches_per_epoch()));
  return {per, static_cast<double>(epoch) + static_cast<double>(batch) / per,
          static_cast<double>(epoch) + static_cast<double>(batch + 1) / per};
}

}  // namespace

void PruningCallback::on_after_backward(Trainer& trainer, int64_t epoch, int64_t batch) {
  // Gradient criteria: accumulate over the last `taylor_batches` batches before the next cut, from
  // the gradients as backward left them (before clipping and the optimizer step).
  // Every rank accumulates (the gradients are the same mean everywhere), so every rank agrees on
  // whether a cut has its gradients; only rank 0's are used.
  if (taylor_batches_ <= 0) return;
  const auto [per, from, to] = batch_span(trainer, epoch, batch);
  const double next = schedule_.next_step_after(from);
  if (next - to < static_cast<double>(taylor_batches_) / per - 1e-9) accumulate(trainer);
}

void PruningCallback::accumulate(Trainer& trainer) {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& p : trainer.model()->named_parameters()) params.emplace_back(p.key(), p.value());
  importance::accumulate(pruner_->options().importance(), params, taylor_);
}

void PruningCallback::on_batch_end(Trainer& trainer, int64_t epoch, int64_t batch, double) {
  const auto [per, from, to] = batch_span(trainer, epoch, batch);
  // Steps due during this batch, inside the epoch: cut now, between this batch and the next. A step
  // at the epoch's end (epoch + 1) is left to on_epoch_begin, after the epoch's evaluation.
  const auto due = schedule_.steps_between(from, to);
  if (!due.empty() && due.back().first < static_cast<double>(epoch + 1) - 1e-9) cut(trainer, due.back().first);
}

void PruningCallback::on_epoch_begin(Trainer& trainer, int64_t epoch) {
  if (schedule_.prunes_at(static_cast<double>(epoch))) cut(trainer, static_cast<double>(epoch));
}

void PruningCallback::cut(Trainer& trainer, double time) {
  const auto t0 = std::chrono::steady_clock::now();
  const double ratio = schedule_.ratio_at(time);
  pruner_->set_ratio(ratio);
  // A budget is stepped as a ratio would be: the schedule's share of its final ratio.
  const double final_ratio = schedule_.options().ratio();
  if (!pruner_->options().target().empty()) pruner_->set_progress(final_ratio > 0 ? std::min(1.0, ratio / final_ratio) : 1.0);
  // Data-parallel: rank 0 plans (its accumulated gradients are the ranks' mean, its buffers are
  // everyone's) and sends the plan as JSON; every other rank applies it with the same surgery.
  if (taylor_batches_ > 0 && taylor_.empty()) {
    // A run resumed right at this cut: the batches before it ran in the interrupted process. Take
    // the gradients of the same batches again, at the weights the checkpoint holds.
    // (A cut before any batch takes the first batches'.)
    const int64_t per = std::max<int64_t>(1, trainer.batches_per_epoch());
    const int64_t epoch = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(time - 1e-9)) - 1);
    const int64_t end = time <= 1e-9 ? std::min(per, taylor_batches_)
                                     : static_cast<int64_t>(std::llround((time - static_cast<double>(epoch)) * static_cast<double>(per)));
    const int64_t first = std::max<int64_t>(0, end - taylor_batches_);
    if (verbose) std::cout << "prune  note: no gradients were accumulated before the cut at epoch " << time
                           << " (a run resumed at it, or a cut before any batch); taking those of " << end - first
                           << " batches of epoch " << epoch << std::endl;
    // Dropout in these passes must not move the generator a resumed run shares with an unbroken one.
    const nn::RandomStreamGuard keep;
    trainer.backward_only(epoch, first, end - first, [&] { accumulate(trainer); });
  }
  if (before_first_cut && plans_->empty()) {
    // With this cut's gradients, so a sensitivity scan ranks units as the cut will.
    pruner_->set_gradients(taylor_.empty() ? nullptr : &taylor_);
    try {
      before_first_cut(trainer);
    } catch (...) {
      pruner_->set_gradients(nullptr);
      throw;
    }
    pruner_->set_gradients(nullptr);
  }
  const auto& group = trainer.process_group();
  layers::PruningPlan plan;
  if (trainer.is_main()) {
    pruner_->set_gradients(taylor_.empty() ? nullptr : &taylor_);
    plan = pruner_->step(&trainer.optimizer());
    pruner_->set_gradients(nullptr);
  }
  if (group) {
    // Rank 0's step may take longer than the collective timeout (a large model's verification):
    // the others wait for it as long as it beats, then take the plan.
    const std::string key = "plan/" + std::to_string(plans_->size());
    if (trainer.is_main()) group->announce(key);
    else group->await(key, "rank 0's pruning plan at epoch " + std::to_string(time));
    const std::string json = group->broadcast_string(trainer.is_main() ? plan.to_json() : std::string(), 0,
                                                     "rank 0's pruning plan at epoch " + std::to_string(time));
    if (!trainer.is_main()) plan = pruner_->apply(layers::PruningPlan::from_json(json), &trainer.optimizer());
  }
  taylor_.clear();
  plans_->push_back(plan);
  // Cut tensors come back in the default layout.
  if (trainer.options().channels_last() && trainer.device().is_cpu()) {
    nn::to_memory_format(*trainer.model(), torch::MemoryFormat::ChannelsLast);
  }
  trainer.check_replicas("after the cut at epoch " + std::to_string(time));
  const auto [params, macs] = measure_size(trainer);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (verbose) std::cout << "prune  epoch " << time << ": ratio " << ratio << ", " << plan.groups.size()
            << " groups cut, params " << params << ", MACs " << macs << " (" << seconds << " s)" << std::endl;
  if (verbose) {
    for (const auto& note : plan.notes) std::cout << "prune  note: " << note << std::endl;
  }
  if (log_) {
    log_->write("prune", {{"epoch", time},
                          {"ratio", ratio},
                          {"groups_cut", static_cast<double>(plan.groups.size())},
                          {"params", static_cast<double>(params)},
                          {"macs", static_cast<double>(macs)},
                          {"seconds", seconds}});
  }
}

}  // namespace libprune::train
