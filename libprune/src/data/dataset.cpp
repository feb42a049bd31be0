#include "libprune/data/dataset.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace libprune::data {

torch::Tensor Dataset::example(int64_t batch) {
  TORCH_CHECK_VALUE(size() > 0, "the dataset is empty. Fix: point the data path at a folder or files with examples");
  std::vector<int64_t> idx(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) idx[static_cast<size_t>(i)] = i % size();
  return get(idx, false).x;
}

TensorDataset::TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes, bool flip, int64_t pad_crop)
    : images_(std::move(images)), labels_(std::move(labels)), num_classes_(num_classes), flip_(flip), pad_crop_(pad_crop) {
  TORCH_CHECK_VALUE(images_.dim() == 4 && labels_.dim() == 1 && images_.size(0) == labels_.size(0),
                    "TensorDataset: images must be [N, C, H, W] and labels [N], got ", images_.sizes(), " and ",
                    labels_.sizes());
}

Batch TensorDataset::get(const std::vector<int64_t>& indices, bool train, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto idx = torch::tensor(indices, torch::kLong);
  Batch b{images_.index_select(0, idx), labels_.index_select(0, idx)};
  if (train && pad_crop_ > 0) {
    const int64_t h = b.x.size(2), w = b.x.size(3), p = pad_crop_;
    auto padded = torch::constant_pad_nd(b.x, {p, p, p, p});
    auto out = torch::empty_like(b.x);
    const auto offsets = torch::randint(0, 2 * p + 1, {b.x.size(0), 2}, gen, torch::kLong);
    const auto* o = offsets.data_ptr<int64_t>();
    for (int64_t i = 0; i < b.x.size(0); ++i) {
      out[i].copy_(padded[i].narrow(1, o[2 * i], h).narrow(2, o[2 * i + 1], w));
    }
    b.x = out;
  }
  if (train && flip_) {
    const auto mask = torch::rand({b.x.size(0)}, gen) < 0.5;
    b.x = torch::where(mask.view({-1, 1, 1, 1}), b.x.flip({3}), b.x);
  }
  return b;
}

std::shared_ptr<TensorDataset> limit(std::shared_ptr<TensorDataset> set, int64_t n) {
  if (n <= 0 || n >= set->size()) return set;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto b = set->get(idx, false);
  return std::make_shared<TensorDataset>(b.x, b.y, set->num_classes());
}

Loader::Loader(Dataset& dataset, int64_t batch_size, bool train, uint64_t seed, bool drop_last)
    : dataset_(dataset), batch_size_(batch_size), train_(train), drop_last_(drop_last), seed_(seed) {
  TORCH_CHECK_VALUE(batch_size > 0, "batch_size must be > 0, got ", batch_size);
  TORCH_CHECK_VALUE(dataset.size() > 0, "the dataset is empty. Fix: point the data path at a folder or files with examples");
}

int64_t Loader::batches() const {
  const int64_t n = dataset_.size();
  return drop_last_ && n >= batch_size_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

void Loader::start(int64_t epoch) {
  if (pending_.valid()) pending_.wait();
  order_.resize(static_cast<size_t>(dataset_.size()));
  std::iota(order_.begin(), order_.end(), 0);
  if (train_) {
    std::mt19937_64 rng(seed_ * 1000003ULL + static_cast<uint64_t>(epoch));
    std::shuffle(order_.begin(), order_.end(), rng);
  }
  cursor_ = 0;
  epoch_ = epoch;
  pending_ = std::async(std::launch::async, [this] { return load(0); });
}

Batch Loader::load(size_t b) {
  const size_t begin = b * static_cast<size_t>(batch_size_);
  const size_t end = std::min(order_.size(), begin + static_cast<size_t>(batch_size_));
  const uint64_t seed = (seed_ * 1000003ULL + static_cast<uint64_t>(epoch_)) * 7919ULL + b;
  return dataset_.get(std::vector<int64_t>(order_.begin() + static_cast<long>(begin), order_.begin() + static_cast<long>(end)),
                      train_, seed);
}

bool Loader::next(Batch& out) {
  if (!pending_.valid() || static_cast<int64_t>(cursor_) >= batches()) return false;
  out = pending_.get();
  ++cursor_;
  if (static_cast<int64_t>(cursor_) < batches()) {
    const size_t b = cursor_;
    pending_ = std::async(std::launch::async, [this, b] { return load(b); });
  }
  return true;
}

}  // namespace libprune::data
