#include "stages.h"

#include "libprune/io/checkpoint.h"
#include "libprune/layers/apply.h"
#include "libprune/nn/memory_format.h"

namespace libprune::recipe::detail {

std::vector<StageRun> make_stages(const Recipe& recipe, const models::ModelPtr& model, const graph::Forward& forward) {
  std::vector<StageRun> out;
  for (const auto& stage : recipe.pruning) {
    // The schedule sets each step's ratio.
    auto pruner = std::make_shared<prune::Pruner>(std::static_pointer_cast<torch::nn::Module>(model), forward,
                                                  prune::PrunerOptions(stage.pruner).ratio(0.0));
    pruner->record_sizes();  // the base ratios count against, before any replayed cut
    const int64_t taylor = importance::accumulates(stage.pruner.importance()) ? stage.extra.taylor_batches() : 0;
    out.push_back({pruner, schedule::Schedule(stage.schedule), taylor});
  }
  return out;
}

double ratio_before(const std::vector<StageRun>& stages, double time) {
  double latest = -1, ratio = 0;
  for (const auto& stage : stages) {
    for (const auto& [at, r] : stage.schedule.steps()) {
      if (at < time - 1e-9 && at >= latest) latest = at, ratio = r;
    }
  }
  return ratio;
}

Resumed resume(const std::string& last, const std::string& recipe_id, train::Trainer& trainer, train::PlanHistory& plans,
               const std::function<void(int64_t)>& before_load) {
  const auto meta = io::read_checkpoint_meta(last);
  TORCH_CHECK_VALUE(meta.recipe_id == recipe_id, "checkpoint '", last, "' was written by another recipe (or other "
                    "settings): resuming it here would mix two runs. Fix: resume with the recipe and --set values that "
                    "wrote it, or use another output_dir");
  auto model = trainer.model();
  for (const auto& plan : train::plans_from_json(meta.plans_json)) {
    layers::apply_plan(*model, plan);
    plans.push_back(plan);
  }
  if (trainer.options().channels_last() && trainer.device().is_cpu()) {
    nn::to_memory_format(*model, torch::MemoryFormat::ChannelsLast);
  }
  if (before_load) before_load(meta.epoch);
  io::load_checkpoint(last, *model, trainer.optimizer());
  return {meta.epoch, meta.best_top1, nlohmann::json::parse(meta.extra_json).value("rows", nlohmann::json::object())};
}

}  // namespace libprune::recipe::detail
