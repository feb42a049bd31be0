#pragma once
// Datasets the Trainer reads: a size, and a batch for a list of indices. In-memory image sets
// (MNIST, Fashion-MNIST, CIFAR) slice; ImageFolder decodes files on several threads; in-memory named
// tensors (token ids and attention masks, or anything indexed by example) gather rows.
#include "libprune/nn/inputs.h"

#include <torch/torch.h>

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace libprune::data {

// Named inputs (images: "images", float [B, C, H, W]; text: "input_ids", "attention_mask", ...)
// and the labels, int64 [B].
struct Batch {
  nn::Inputs inputs;
  torch::Tensor y;
  // The only input (image batches).
  const torch::Tensor& x() const { return inputs.single(); }
};

// The input name of image batches.
constexpr const char* kImages = "images";

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual int64_t num_classes() const = 0;
  // The classes' names by label (reports name the confusion matrix's rows), or empty when unnamed.
  virtual std::vector<std::string> class_names() const { return {}; }
  // `train` turns on random augmentation, drawn from `seed` only (so batches are reproducible
  // whichever thread loads them).
  virtual Batch get(const std::vector<int64_t>& indices, bool train, uint64_t seed = 0) = 0;
  // The inputs of a batch of `batch` examples, for tracing and latency.
  nn::Inputs example(int64_t batch = 1);
  // Reorders an epoch's example order (shuffled when training) before the loader cuts it into
  // batches (text sets bucket by length); `seed` is the epoch's. The default keeps the order.
  virtual void arrange(std::vector<int64_t>& order, int64_t batch_size, bool train, uint64_t seed) const {
    (void)order, (void)batch_size, (void)train, (void)seed;
  }
};

// Images already decoded and normalised in memory.
class TensorDataset : public Dataset {
 public:
  // images float [N, C, H, W], labels int64 [N]. `flip`: random horizontal flips when training;
  // `pad_crop`: pad by this many pixels and crop back at random (CIFAR-style), when training.
  TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes, bool flip = false, int64_t pad_crop = 0);
  int64_t size() const override { return labels_.size(0); }
  int64_t num_classes() const override { return num_classes_; }
  Batch get(const std::vector<int64_t>& indices, bool train, uint64_t seed = 0) override;

 private:
  torch::Tensor images_, labels_;
  int64_t num_classes_;
  bool flip_;
  int64_t pad_crop_;
};

// Examples held in memory as named tensors indexed along dim 0 (token ids and an attention mask,
// say) with int64 labels; any dtype. Batches gather rows.
class NamedTensorDataset : public Dataset {
 public:
  NamedTensorDataset(nn::Inputs tensors, torch::Tensor labels, int64_t num_classes);
  int64_t size() const override { return labels_.size(0); }
  int64_t num_classes() const override { return num_classes_; }
  Batch get(const std::vector<int64_t>& indices, bool train, uint64_t seed = 0) override;

 private:
  nn::Inputs tensors_;
  torch::Tensor labels_;
  int64_t num_classes_;
};

// Takes at most `limit` examples (the first ones); 0 keeps all. For quick runs and tests.
std::shared_ptr<TensorDataset> limit(std::shared_ptr<TensorDataset> set, int64_t limit);

// Shuffled (or ordered) batches of a dataset; the next batch is prepared on a background thread
// while the current one trains. The order depends only on (seed, epoch), so a resumed run sees the
// same batches as an unbroken one.
class Loader {
 public:
  Loader(Dataset& dataset, int64_t batch_size, bool train, uint64_t seed, bool drop_last = false);
  // Starts epoch `epoch`; then next() until it returns false.
  void start(int64_t epoch);
  bool next(Batch& out);
  int64_t batches() const;
  // Data-parallel reading: this loader yields rank `rank`'s part of each epoch. `split`: every
  // batch of the epoch is cut into `world` equal parts (training: the global batch and the data
  // order do not depend on the number of ranks); otherwise whole batches go to the ranks in turn
  // (evaluation: every example is read once, by one rank). Set before start().
  void shard(int64_t rank, int64_t world, bool split);

 private:
  Batch load(size_t b);
  Dataset& dataset_;
  int64_t batch_size_;
  bool train_, drop_last_;
  uint64_t seed_;
  std::vector<int64_t> order_;
  size_t cursor_ = 0;
  int64_t epoch_ = 0;
  int64_t rank_ = 0, world_ = 1;
  bool split_ = true;
  std::future<Batch> pending_;
};

}  // namespace libprune::data
