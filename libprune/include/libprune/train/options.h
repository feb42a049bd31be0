#pragma once
// The Trainer's options, defined once (libprune/options.h): a recipe's `training` section and C++
// (TrainOptions().epochs(8).lr(0.1)) come from this list, and so does docs/recipes.md.
#include "libprune/options.h"

#include <string>
#include <vector>

namespace libprune::train {

enum class Optimizer { Sgd, AdamW };
enum class LrSchedule { Constant, Step, Cosine, OneCycle, Linear };
using Epochs = std::vector<int64_t>;

// X("key", type, field, default, check, "meaning"); keys are relative to the recipe's `training`.
#define LIBPRUNE_TRAIN_OPTIONS(X)                                                                                      \
  X("epochs", int64_t, epochs, 1, ::libprune::options::check::at_least<int64_t>(1, "train at least one epoch"),         \
    "epochs to train, pruning stages included")                                                                         \
  X("batch_size", int64_t, batch_size, 128, ::libprune::options::check::at_least<int64_t>(1, "e.g. 128"),               \
    "training batch size")                                                                                              \
  X("eval_batch_size", int64_t, eval_batch_size, 256, ::libprune::options::check::at_least<int64_t>(1, "e.g. 256"),     \
    "evaluation batch size")                                                                                            \
  X("optimizer.name", ::libprune::train::Optimizer, optimizer, ::libprune::train::Optimizer::Sgd, nullptr,              \
    "sgd or adamw")                                                                                                     \
  X("optimizer.lr", double, lr, 0.1, ::libprune::options::check::positive("e.g. 0.1 for SGD, 0.001 for AdamW"),          \
    "the peak learning rate")                                                                                           \
  X("optimizer.momentum", double, momentum, 0.9, ::libprune::options::check::fraction("e.g. 0.9"), "sgd: momentum")    \
  X("optimizer.nesterov", bool, nesterov, false, nullptr, "sgd: Nesterov momentum")                                     \
  X("optimizer.weight_decay", double, weight_decay, 5e-4,                                                              \
    ::libprune::options::check::at_least<double>(0, "e.g. 0.0005"), "L2 weight decay (decoupled for adamw)")           \
  X("optimizer.decay_biases_and_norms", bool, decay_biases_and_norms, true, nullptr,                                    \
    "false: biases and norm weights (1-D parameters) get no weight decay, as BERT fine-tuning does")                  \
  X("lr_schedule.name", ::libprune::train::LrSchedule, lr_schedule, ::libprune::train::LrSchedule::Cosine, nullptr,     \
    "constant, step, cosine, one_cycle (up from lr/25 over 30%, cosine down to lr/1e4), linear (down to 0 after the " \
    "warmup, as BERT fine-tuning does)")                                                                               \
  X("lr_schedule.warmup_epochs", double, warmup_epochs, 0,                                                              \
    ::libprune::options::check::at_least<double>(0, "e.g. 1"), "linear warmup from 0 (fractions allowed)")              \
  X("lr_schedule.step_size", int64_t, step_size, 30, ::libprune::options::check::at_least<int64_t>(1, "e.g. 30"),        \
    "step: epochs between decays")                                                                                      \
  X("lr_schedule.gamma", double, gamma, 0.1, nullptr, "step: the decay factor")                                         \
  X("lr_schedule.restarts", Epochs, restarts, {}, nullptr,                                                              \
    "epochs where a new cycle starts (train dense to convergence, then prune and fine-tune in a fresh cycle)")          \
  X("lr_schedule.restart_scale", double, restart_scale, 1.0, ::libprune::options::check::positive("e.g. 0.4"),          \
    "restarted cycles peak at lr x restart_scale")                                                                      \
  X("max_grad_norm", double, max_grad_norm, 0, ::libprune::options::check::at_least<double>(0, "e.g. 1.0; 0 is off"),   \
    "clip the gradients' global L2 norm to this before each step (0: no clipping; BERT fine-tuning uses 1.0)")         \
  X("label_smoothing", double, label_smoothing, 0, ::libprune::options::check::fraction("e.g. 0.1"),                    \
    "label smoothing of the cross-entropy loss")                                                                        \
  X("bn_l1", double, bn_l1, 0, ::libprune::options::check::at_least<double>(0, "e.g. 1e-4"),                             \
    "L1 penalty on batch-norm scales (network slimming; pair with the bn_scale criterion)")                             \
  X("channels_last", bool, channels_last, true, nullptr, "on CPU, conv nets train about 3x faster in channels_last")     \
  X("threads", int, threads, 0, ::libprune::options::check::at_least<int>(0, "0 uses every core"),                       \
    "torch intra-op threads; 0: every core")                                                                            \
  X("device", std::string, device, "cpu", nullptr, "cpu or cuda[:N] (with a CUDA LibTorch)")                            \
  X("seed", uint64_t, seed, 0, nullptr, "data order, augmentation and dropout derive from (seed, epoch)")               \
  X("max_batches", int64_t, max_batches, 0, ::libprune::options::check::at_least<int64_t>(0, "0 trains on every batch"),\
    "batches per epoch (0: all); quick runs and tests")                                                                 \
  X("progress", bool, progress, true, nullptr,                                                                          \
    "batches/s, loss, running train top-1 and ETA: a redrawn bar on a terminal, a line every quarter epoch otherwise")  \
  X("retain_freed_memory", bool, retain_freed_memory, true, nullptr,                                                    \
    "keep freed tensor memory in the process (glibc mallopt, libprune/runtime.h): a training step 2-5x faster on a VM")\
  X("distributed.timeout_s", double, dist_timeout_s, 60, ::libprune::options::check::positive("e.g. 60"),              \
    "many processes: a rank that stops or hangs makes the others stop within this many seconds, naming it")           \
  X("distributed.check_every", int64_t, dist_check_every, 100,                                                        \
    ::libprune::options::check::at_least<int64_t>(0, "e.g. 100; 0 checks only after cuts and epochs"),                \
    "many processes: compare every rank's parameters and buffers with rank 0's (a digest) every N steps, after every " \
    "cut and at every epoch's end")                                                                                   \
  X("distributed.bucket_mb", double, dist_bucket_mb, 25, ::libprune::options::check::positive("e.g. 25"),              \
    "many processes: MiB of gradients per all-reduce bucket (a full bucket is reduced while backward goes on)")

struct TrainOptions {
  TrainOptions() = default;
  LIBPRUNE_TRAIN_OPTIONS(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<TrainOptions>>& specs();
  // Every option's check, then those that involve two (warmup within the run, restarts inside it,
  // Nesterov with momentum, a CUDA device that exists); throws naming the option and the fix.
  void validate() const;
  std::string problem(std::string* key) const;
};

}  // namespace libprune::train

namespace libprune::options {
template <>
struct EnumNames<train::Optimizer> {
  static constexpr const char* what = "optimizer";
  static constexpr const char* names[] = {"sgd", "adamw"};
};
template <>
struct EnumNames<train::LrSchedule> {
  static constexpr const char* what = "lr schedule";
  static constexpr const char* names[] = {"constant", "step", "cosine", "one_cycle", "linear"};
};
}  // namespace libprune::options
