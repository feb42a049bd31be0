#include "libprune/data/dataset.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

namespace libprune::data {

nn::Inputs Dataset::example(int64_t batch) {
  TORCH_CHECK_VALUE(size() > 0, "the dataset is empty. Fix: point the data path at a folder or files with examples");
  std::vector<int64_t> idx(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) idx[static_cast<size_t>(i)] = i % size();
  return get(idx, false).inputs;
}

TensorDataset::TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes, bool flip, int64_t pad_crop)
    : images_(std::move(images)), labels_(std::move(labels)), num_classes_(num_classes), flip_(flip), pad_crop_(pad_crop) {
  TORCH_CHECK_VALUE(images_.dim() == 4 && labels_.dim() == 1 && images_.size(0) == labels_.size(0),
                    "TensorDataset: images must be [N, C, H, W] and labels [N], got ", images_.sizes(), " and ",
                    labels_.sizes());
  TORCH_CHECK_VALUE(images_.scalar_type() == torch::kFloat && labels_.scalar_type() == torch::kLong,
                    "TensorDataset: images must be float32 and labels int64, got ", images_.scalar_type(), " and ",
                    labels_.scalar_type(), ". Fix: convert them with .to(torch::kFloat) and .to(torch::kLong)");
  TORCH_CHECK_VALUE(pad_crop_ >= 0, "TensorDataset: pad_crop must be >= 0, got ", pad_crop_);
  images_ = images_.cpu().contiguous();
  labels_ = labels_.cpu().contiguous();
}

// Plain loops, no ATen kernels: this runs on the loader's thread, where an op big enough to go
// parallel starts a second OpenMP team that competes with training for the same cores (measured:
// a Fashion-MNIST epoch spent most of its samples spinning in libgomp).
Batch TensorDataset::get(const std::vector<int64_t>& indices, bool train, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(indices.size()), c = images_.size(1), h = images_.size(2),
                w = images_.size(3), count = size();
  const auto images = torch::empty({n, c, h, w}, images_.options());
  Batch b{{{kImages, images}}, torch::empty({n}, labels_.options())};
  const float* src = images_.data_ptr<float>();
  const int64_t* labels = labels_.data_ptr<int64_t>();
  float* dst = images.data_ptr<float>();
  int64_t* y = b.y.data_ptr<int64_t>();
  const int64_t per = c * h * w;
  std::mt19937_64 rng(seed);
  const int64_t p = train ? pad_crop_ : 0;
  std::uniform_int_distribution<int64_t> shift(-p, p);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = indices[static_cast<size_t>(i)];
    TORCH_CHECK_INDEX(k >= 0 && k < count, "TensorDataset: index ", k, " is outside [0, ", count, ")");
    y[i] = labels[k];
    const float* in = src + k * per;
    float* out = dst + i * per;
    // Pad by p and crop back at a random offset, then flip: out[y][x] = in[y + dy][x' + dx] with
    // x' = w - 1 - x when flipped, and zero outside the image.
    const int64_t dy = p > 0 ? shift(rng) : 0, dx = p > 0 ? shift(rng) : 0;
    const bool mirror = train && flip_ && (rng() & 1U) != 0;
    if (dy == 0 && dx == 0 && !mirror) {
      std::memcpy(out, in, static_cast<size_t>(per) * sizeof(float));
      continue;
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t r = 0; r < h; ++r) {
        const int64_t sr = r + dy;
        float* row = out + (ch * h + r) * w;
        if (sr < 0 || sr >= h) {
          std::fill(row, row + w, 0.0f);
          continue;
        }
        const float* in_row = in + (ch * h + sr) * w;
        for (int64_t x = 0; x < w; ++x) {
          const int64_t sc = (mirror ? w - 1 - x : x) + dx;
          row[x] = sc >= 0 && sc < w ? in_row[sc] : 0.0f;
        }
      }
    }
  }
  return b;
}

std::shared_ptr<TensorDataset> limit(std::shared_ptr<TensorDataset> set, int64_t n) {
  if (n <= 0 || n >= set->size()) return set;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto b = set->get(idx, false);
  return std::make_shared<TensorDataset>(b.x(), b.y, set->num_classes());
}

NamedTensorDataset::NamedTensorDataset(nn::Inputs tensors, torch::Tensor labels, int64_t num_classes)
    : labels_(labels.cpu().contiguous()), num_classes_(num_classes) {
  TORCH_CHECK_VALUE(labels_.dim() == 1 && labels_.scalar_type() == torch::kLong,
                    "NamedTensorDataset: labels must be int64 [N], got ", labels_.scalar_type(), " ", labels_.sizes());
  TORCH_CHECK_VALUE(tensors.size() > 0, "NamedTensorDataset: no input tensors. Fix: pass e.g. input_ids and attention_mask");
  for (const auto& [name, t] : tensors.items()) {
    TORCH_CHECK_VALUE(t.defined() && t.dim() >= 1 && t.size(0) == labels_.size(0), "NamedTensorDataset: \"", name,
                      "\" must have one row per label (", labels_.size(0), "), got ", t.defined() ? t.sizes() : c10::IntArrayRef{});
    tensors_.set(name, t.cpu().contiguous());
  }
}

// Rows copied in plain loops, like TensorDataset: no ATen op (and no OpenMP team) on the loader thread.
Batch NamedTensorDataset::get(const std::vector<int64_t>& indices, bool, uint64_t) {
  const auto n = static_cast<int64_t>(indices.size()), count = size();
  Batch b;
  b.y = torch::empty({n}, labels_.options());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = indices[static_cast<size_t>(i)];
    TORCH_CHECK_INDEX(k >= 0 && k < count, "NamedTensorDataset: index ", k, " is outside [0, ", count, ")");
    b.y.data_ptr<int64_t>()[i] = labels_.data_ptr<int64_t>()[k];
  }
  for (const auto& [name, t] : tensors_.items()) {
    auto sizes = t.sizes().vec();
    sizes[0] = n;
    auto out = torch::empty(sizes, t.options());
    const auto row = static_cast<size_t>(t.numel() / std::max<int64_t>(1, t.size(0))) * t.element_size();
    const auto* src = static_cast<const char*>(t.data_ptr());
    auto* dst = static_cast<char*>(out.data_ptr());
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + static_cast<size_t>(i) * row, src + static_cast<size_t>(indices[static_cast<size_t>(i)]) * row, row);
    b.inputs.set(name, out);
  }
  return b;
}

Loader::Loader(Dataset& dataset, int64_t batch_size, bool train, uint64_t seed, bool drop_last)
    : dataset_(dataset), batch_size_(batch_size), train_(train), drop_last_(drop_last), seed_(seed) {
  TORCH_CHECK_VALUE(batch_size > 0, "batch_size must be > 0, got ", batch_size);
  TORCH_CHECK_VALUE(dataset.size() > 0, "the dataset is empty. Fix: point the data path at a folder or files with examples");
}

int64_t Loader::batches() const {
  const int64_t n = dataset_.size();
  const int64_t all = drop_last_ && n >= batch_size_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
  return split_ ? all : (all - rank_ + world_ - 1) / world_;
}

void Loader::shard(int64_t rank, int64_t world, bool split) {
  TORCH_CHECK_VALUE(world >= 1 && rank >= 0 && rank < world, "Loader::shard: rank ", rank, " of ", world,
                    " is not a rank");
  TORCH_CHECK_VALUE(!split || batch_size_ % world == 0, "a batch of ", batch_size_, " does not split evenly over ",
                    world, " ranks. Fix: make training.batch_size a multiple of the number of processes");
  rank_ = rank;
  world_ = world;
  split_ = split || world == 1;
}

void Loader::start(int64_t epoch) {
  if (pending_.valid()) pending_.wait();
  order_.resize(static_cast<size_t>(dataset_.size()));
  std::iota(order_.begin(), order_.end(), 0);
  const uint64_t epoch_seed = seed_ * 1000003ULL + static_cast<uint64_t>(epoch);
  if (train_) {
    std::mt19937_64 rng(epoch_seed);
    std::shuffle(order_.begin(), order_.end(), rng);
  }
  dataset_.arrange(order_, batch_size_, train_, epoch_seed);
  cursor_ = 0;
  epoch_ = epoch;
  if (batches() > 0) pending_ = std::async(std::launch::async, [this] { return load(0); });
}

Batch Loader::load(size_t b) {
  if (!split_) b = b * static_cast<size_t>(world_) + static_cast<size_t>(rank_);  // whole batches in turn
  size_t begin = b * static_cast<size_t>(batch_size_);
  size_t end = std::min(order_.size(), begin + static_cast<size_t>(batch_size_));
  uint64_t seed = (seed_ * 1000003ULL + static_cast<uint64_t>(epoch_)) * 7919ULL + b;
  if (split_ && world_ > 1) {  // this rank's part of the global batch, with its own augmentation
    const size_t part = (end - begin + static_cast<size_t>(world_) - 1) / static_cast<size_t>(world_);
    begin = std::min(end, begin + part * static_cast<size_t>(rank_));
    end = std::min(end, begin + part);
    seed += 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(rank_);
  }
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
