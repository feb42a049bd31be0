#pragma once
// Data-parallel gradients: each parameter's gradient is copied into a bucket as backward produces
// it (an autograd hook), and a full bucket's all-reduce starts at once, so communication overlaps
// the rest of the backward pass. After backward, finish() waits and writes the mean over the ranks
// into every .grad. Buckets launch in a fixed order on every rank (as c10d's Reducer does), and
// are rebuilt when the parameters change (a cut shrank them, QAT added scales).
//
//   dist::GradientSync sync(group);
//   sync.prepare(*model);  loss.backward();  sync.finish();  optimizer.step();
#include "libprune/dist/process_group.h"

#include <memory>
#include <mutex>
#include <vector>

namespace libprune::dist {

class GradientSync {
 public:
  // Buckets hold up to `bucket_mb` MiB of gradients (the first, filled first, up to 1 MiB).
  explicit GradientSync(std::shared_ptr<ProcessGroup> group, double bucket_mb = 25);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Before the forward pass: rebuilds the buckets if the model's trainable parameters changed,
  // then arms the hooks for one backward pass. Hooks fire only between prepare() and finish(), so
  // a backward pass of one rank alone (a pruning criterion's) reduces nothing.
  void prepare(torch::nn::Module& model);
  // After backward: starts the buckets not yet started (unused parameters count as zero), waits,
  // and writes the mean gradient into every parameter's .grad. `step` names the step in errors.
  void finish(int64_t step);

  struct Stats {
    int64_t steps = 0;
    double wait_seconds = 0;     // in finish(), waiting for reductions after backward ended
    int64_t bytes_per_step = 0;  // gradient bytes each rank sends into the all-reduce per step
    int64_t buckets = 0;
    int64_t rebuilds = 0;
  };
  const Stats& stats() const { return stats_; }
  void reset_stats();

 private:
  struct Bucket;
  void rebuild(const std::vector<torch::Tensor>& params);
  void on_grad(size_t param, const torch::Tensor& grad);
  void launch_ready();
  void remove_hooks();

  std::shared_ptr<ProcessGroup> group_;
  int64_t bucket_bytes_;
  std::vector<torch::Tensor> params_;
  std::vector<std::pair<size_t, size_t>> slot_;  // param -> (bucket, offset in elements)
  std::vector<unsigned> hooks_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<const void*> signature_;
  std::vector<int64_t> numels_;
  std::vector<bool> seen_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  std::mutex mutex_;
  Stats stats_;
};

}  // namespace libprune::dist
