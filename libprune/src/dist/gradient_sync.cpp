#include "libprune/dist/gradient_sync.h"

#include <chrono>

namespace libprune::dist {

struct GradientSync::Bucket {
  std::vector<size_t> params;
  torch::Tensor flat;
  size_t pending = 0;
  std::shared_ptr<ProcessGroup::Pending> work;
};

GradientSync::GradientSync(std::shared_ptr<ProcessGroup> group, double bucket_mb)
    : group_(std::move(group)), bucket_bytes_(static_cast<int64_t>(bucket_mb * 1024 * 1024)) {
  TORCH_CHECK_VALUE(group_, "GradientSync: no process group");
  TORCH_CHECK_VALUE(bucket_mb > 0, "GradientSync: bucket_mb must be positive, got ", bucket_mb, ". Fix: e.g. 25");
}

GradientSync::~GradientSync() { remove_hooks(); }

void GradientSync::remove_hooks() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
  hooks_.clear();
}

void GradientSync::reset_stats() {
  const int64_t bytes = stats_.bytes_per_step, buckets = stats_.buckets;
  stats_ = Stats{};
  stats_.bytes_per_step = bytes;
  stats_.buckets = buckets;
}

void GradientSync::rebuild(const std::vector<torch::Tensor>& params) {
  remove_hooks();
  params_ = params;
  buckets_.clear();
  slot_.assign(params_.size(), {0, 0});
  // Backward produces the last layers' gradients first: fill buckets from the last parameter, the
  // first bucket small so its reduction starts early.
  int64_t bytes = 0, elements = 0, total = 0, cap = std::min<int64_t>(bucket_bytes_, 1 << 20);
  std::vector<int64_t> sizes;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    const int64_t b = p.numel() * static_cast<int64_t>(p.element_size());
    const bool new_bucket = buckets_.empty() || buckets_.back()->flat.scalar_type() != p.scalar_type() ||
                            buckets_.back()->flat.device() != p.device() || (bytes > 0 && bytes + b > cap);
    if (new_bucket) {
      if (!buckets_.empty()) cap = bucket_bytes_;
      buckets_.push_back(std::make_unique<Bucket>());
      buckets_.back()->flat = torch::empty({0}, torch::TensorOptions().dtype(p.scalar_type()).device(p.device()));
      sizes.push_back(0);
      bytes = elements = 0;
    }
    slot_[k] = {buckets_.size() - 1, static_cast<size_t>(elements)};
    buckets_.back()->params.push_back(k);
    bytes += b;
    elements += p.numel();
    total += b;
    sizes.back() = elements;
  }
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i]->flat = torch::zeros({sizes[i]}, buckets_[i]->flat.options());
  for (size_t k = 0; k < params_.size(); ++k) {
    hooks_.push_back(params_[k].register_hook([this, k](const torch::Tensor& grad) { on_grad(k, grad); }));
  }
  stats_.bytes_per_step = total;
  stats_.buckets = static_cast<int64_t>(buckets_.size());
  ++stats_.rebuilds;
}

void GradientSync::prepare(torch::nn::Module& model) {
  std::vector<torch::Tensor> params;
  std::vector<const void*> signature;
  std::vector<int64_t> numels;
  for (const auto& p : model.parameters()) {
    if (!p.requires_grad()) continue;
    params.push_back(p);
    signature.push_back(p.unsafeGetTensorImpl());
    numels.push_back(p.numel() * 64 + static_cast<int64_t>(p.scalar_type()));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (signature != signature_ || numels != numels_) {
    rebuild(params);
    signature_ = std::move(signature);
    numels_ = std::move(numels);
  }
  for (auto& b : buckets_) {
    b->flat.zero_();
    b->pending = b->params.size();
    b->work.reset();
  }
  seen_.assign(params_.size(), false);
  next_launch_ = 0;
  armed_ = true;
}

void GradientSync::on_grad(size_t param, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || seen_[param]) return;
  seen_[param] = true;
  const auto [b, offset] = slot_[param];
  auto& bucket = *buckets_[b];
  torch::NoGradGuard no_grad;
  bucket.flat.narrow(0, static_cast<int64_t>(offset), grad.numel()).view(grad.sizes()).copy_(grad);
  if (--bucket.pending == 0) launch_ready();
}

void GradientSync::launch_ready() {
  // In bucket order on every rank, whatever order backward fills them in: collectives must match.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_]->pending == 0) {
    buckets_[next_launch_]->work = group_->allreduce_sum_async(buckets_[next_launch_]->flat);
    ++next_launch_;
  }
}

void GradientSync::finish(int64_t step) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_CHECK(armed_, "GradientSync::finish without prepare(): call prepare(model) before the forward pass");
    armed_ = false;
    for (auto& b : buckets_) b->pending = 0;  // parameters backward did not reach count as zero
    launch_ready();
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string what = "the gradient all-reduce of step " + std::to_string(step);
  for (auto& b : buckets_) group_->wait(b->work, what);
  stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  torch::NoGradGuard no_grad;
  const double world = static_cast<double>(group_->world_size());
  for (auto& b : buckets_) b->flat.div_(world);
  for (size_t k = 0; k < params_.size(); ++k) {
    auto& p = params_[k];
    const auto [b, offset] = slot_[k];
    const auto mean = buckets_[b]->flat.narrow(0, static_cast<int64_t>(offset), p.numel()).view(p.sizes());
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    p.mutable_grad().copy_(mean);
  }
  ++stats_.steps;
}

}  // namespace libprune::dist
