#pragma once
// Training checkpoints: model tensors, optimizer state and a JSON header (epoch, recipe identity,
// plan history, best accuracy, anything else the caller keeps), in one file written atomically.
// A pruned checkpoint loads by rebuilding the model, replaying its plan history, then loading.
#include <torch/torch.h>

#include <string>
#include <vector>

namespace libprune::io {

struct CheckpointMeta {
  int64_t epoch = 0;          // epochs completed
  std::string recipe_id;      // identifies the recipe (hash of what shapes the run)
  std::string plans_json = "[]";  // JSON array of PruningPlan, in order
  double best_top1 = -1;
  std::string extra_json = "{}";  // caller's own record (dense figures, ...)
};

// Writes `path` atomically (temp file, fsync, rename): a failed write leaves the previous file.
void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                     const CheckpointMeta& meta);
// The same checkpoint to several files (last and best), serialised once.
void save_checkpoint(const std::vector<std::string>& paths, torch::nn::Module& model,
                     torch::optim::Optimizer& optimizer, const CheckpointMeta& meta);

// Reads the header only. Throws naming the file and the fix when it is missing or not a checkpoint.
CheckpointMeta read_checkpoint_meta(const std::string& path);

// Loads model tensors (shapes must match: replay the plan history first) and optimizer state.
void load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer);

}  // namespace libprune::io
