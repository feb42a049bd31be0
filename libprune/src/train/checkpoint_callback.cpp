#include "libprune/train/checkpoint_callback.h"

#include "libprune/io/checkpoint.h"

#include <filesystem>

namespace libprune::train {

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

}  // namespace libprune::train
