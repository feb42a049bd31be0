#pragma once
// The training loop: epochs of SGD or AdamW with an LR schedule, evaluated every epoch (top-1,
// top-5), with callbacks for pruning, checkpoints, logging and progress. Device-agnostic; on CPU
// it trains in channels_last (about 3x faster for conv nets with LibTorch 1.13's oneDNN kernels).
#include "libprune/data/dataset.h"
#include "libprune/dist/gradient_sync.h"
#include "libprune/models/model.h"
#include "libprune/train/options.h"

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace libprune::train {

struct EpochMetrics {
  int64_t epoch = 0;
  double loss = 0, train_top1 = 0, top1 = 0, top5 = 0, macro_f1 = 0, lr = 0, seconds = 0;
  int64_t batches = 0;
  // The training loop's mean step time (its batches, callbacks included, without the evaluation);
  // data-parallel: the part of it spent waiting for gradient all-reduces after backward, and the
  // gradient bytes each rank reduced per step (0 alone).
  double step_ms = 0, allreduce_wait_ms = 0;
  int64_t bytes_reduced_per_step = 0;
};

// One pass over an eval set.
struct Evaluation {
  double top1 = 0, top5 = 0;  // accuracy, %
  double macro_f1 = 0;        // %, the mean F1 over the classes that occur as a label or a prediction
  // int64 [classes, classes] on the CPU: row = true label, column = prediction.
  torch::Tensor confusion;
};

// Macro-averaged F1 (%) of a confusion matrix (rows true, columns predicted). Per class
// F1 = 2 TP / (2 TP + FP + FN); a class that is neither a label nor a prediction is left out of the
// mean (as scikit-learn does by default). 0 for an empty matrix.
double macro_f1(const torch::Tensor& confusion);

class Trainer;

class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin(Trainer&) {}
  virtual void on_epoch_begin(Trainer&, int64_t /*epoch*/) {}
  // After loss.backward(), before the optimizer step (penalties that edit gradients).
  virtual void on_after_backward(Trainer&, int64_t /*epoch*/, int64_t /*batch*/) {}
  virtual void on_batch_end(Trainer&, int64_t /*epoch*/, int64_t /*batch*/, double /*loss*/) {}
  virtual void on_epoch_end(Trainer&, const EpochMetrics&) {}
  virtual void on_train_end(Trainer&) {}
};

class Trainer {
 public:
  Trainer(models::ModelPtr model, std::shared_ptr<data::Dataset> train, std::shared_ptr<data::Dataset> eval,
          TrainOptions options);
  void add_callback(std::shared_ptr<Callback> callback) { callbacks_.push_back(std::move(callback)); }

  // Trains epochs [start_epoch, epochs). Returns false if stopped early (request_stop, SIGINT);
  // an interrupted epoch leaves no checkpoint, so the last one stays the last completed epoch.
  bool fit(int64_t start_epoch = 0);
  // Accuracy, macro-F1 and the confusion matrix on the eval set, of the trainer's model or of `model`
  // (a copy being compared: on the trainer's device, in its memory format).
  Evaluation evaluate();
  // `max_batches` > 0: only the first that many eval batches (a data-parallel run deals them to its
  // ranks and reads about as many in all).
  Evaluation evaluate(torch::nn::Module& model, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                      int64_t max_batches = 0);
  // The evaluation at the end of the last epoch fit() ran (empty before the first).
  const Evaluation& last_evaluation() const { return last_evaluation_; }
  // Calls `forward` without gradients on the first `batches` training batches, in file order with no
  // augmentation (post-training calibration; the caller sets the model's modes: quant::calibration_mode).
  void calibrate(const std::function<torch::Tensor(const nn::Inputs&)>& forward, int64_t batches);
  // Forward and backward (gradients averaged over the ranks, no optimizer step) on training batches
  // [first, first + count) of `epoch`, in that epoch's order; `on_gradients` runs after each
  // backward, then the gradients are zeroed. A gradient criterion's inputs, when a run resumed
  // right at a cut (the batches before it ran in the interrupted process).
  void backward_only(int64_t epoch, int64_t first, int64_t count, const std::function<void()>& on_gradients);
  // The LR at `epoch` + `fraction` of it (a fractional epoch).
  double lr_at(double epoch) const;

  models::ModelPtr model() const { return model_; }
  std::shared_ptr<data::Dataset> train_data() const { return train_; }
  std::shared_ptr<data::Dataset> eval_data() const { return eval_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  const TrainOptions& options() const { return options_; }
  torch::Device device() const { return device_; }
  // A batch of eval inputs on the model's device and memory format (tracing, latency).
  nn::Inputs example(int64_t batch = 1);
  const std::vector<EpochMetrics>& history() const { return history_; }
  int64_t batches_per_epoch() const;
  // Mean training loss and top-1 (%) of the epoch in progress, over its batches so far (progress
  // bars); at the epoch's end, its EpochMetrics loss and train_top1.
  double running_train_loss() const {
    return epoch_batches_ > 0 ? epoch_loss_sum_ / static_cast<double>(epoch_batches_) : 0.0;
  }
  double running_train_top1() const {
    return epoch_seen_ > 0 ? 100.0 * static_cast<double>(epoch_correct_) / static_cast<double>(epoch_seen_) : 0.0;
  }

  // Data-parallel training over `group` (every rank builds the same Trainer and calls this before
  // fit): rank 0's parameters and buffers go to every rank; then each rank reads its part of every
  // training batch (the global batch stays training.batch_size), gradients are averaged in buckets
  // overlapping backward, rank 0's buffers (batch-norm statistics) are broadcast after every step,
  // a stop on any rank stops all at the same batch, evaluation is sharded and its counts summed,
  // and the replicas are compared (training.distributed.check_every).
  void distribute(std::shared_ptr<dist::ProcessGroup> group);
  const std::shared_ptr<dist::ProcessGroup>& process_group() const { return group_; }
  // Rank 0 of a data-parallel run, or the only process: the one that writes files and prints.
  bool is_main() const { return !group_ || group_->rank() == 0; }
  const dist::GradientSync* gradient_sync() const { return sync_.get(); }
  // Data-parallel: throws on every rank when any rank's parameters or buffers differ from rank 0's
  // (`when` says where: "after the cut at epoch 3"). Nothing in a single process.
  void check_replicas(const std::string& when);
  // Data-parallel: rank 0's buffers on every rank (after a step, a calibration).
  void broadcast_buffers(const std::string& what);

  // Asks the loop to stop after the current batch (thread- and signal-safe).
  static void request_stop() { stop_flag() = true; }
  static std::atomic<bool>& stop_flag();

 private:
  nn::Inputs prepare(const nn::Inputs& inputs) const;
  // zero_grad, the forward, the training loss (with label smoothing) and its backward, then in a
  // data-parallel run the mean gradient over the ranks (`step` names the collective); returns the
  // logits and the loss. fit() and backward_only() share it, so replayed gradients are the same.
  std::pair<torch::Tensor, torch::Tensor> forward_backward(const data::Batch& b, const torch::Tensor& y, int64_t step);
  // Data-parallel: the epoch's training loss and accuracy over every rank's batches.
  void reduce_epoch_metrics();
  // The stop flag, raised on every rank when any rank raised it (data-parallel).
  bool stop_requested_everywhere();
  models::ModelPtr model_;
  std::shared_ptr<data::Dataset> train_, eval_;
  TrainOptions options_;
  torch::Device device_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::vector<EpochMetrics> history_;
  Evaluation last_evaluation_;
  double epoch_loss_sum_ = 0;
  int64_t epoch_batches_ = 0, epoch_correct_ = 0, epoch_seen_ = 0;
  std::shared_ptr<dist::ProcessGroup> group_;
  std::unique_ptr<dist::GradientSync> sync_;
};

// params and MACs of the trainer's model on one example.
std::pair<int64_t, int64_t> measure_size(Trainer& trainer);

}  // namespace libprune::train
