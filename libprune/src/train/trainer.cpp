#include "libprune/train/trainer.h"

#include "libprune/measure/count_ops.h"
#include "libprune/nn/memory_format.h"
#include "libprune/quant/quantize.h"
#include "libprune/train/bn_l1_penalty.h"
#include "libprune/runtime.h"

#include <chrono>
#include <cmath>
#include <thread>

namespace libprune::train {

std::atomic<bool>& Trainer::stop_flag() {
  static std::atomic<bool> flag{false};
  return flag;
}

LIBPRUNE_DEFINE_OPTION_SPECS(TrainOptions, LIBPRUNE_TRAIN_OPTIONS)

namespace {
std::string cross_check(const TrainOptions& o, std::string* key) {
  if (o.warmup_epochs() >= static_cast<double>(o.epochs())) {
    *key = "lr_schedule.warmup_epochs";
    return "warmup_epochs must be below epochs (" + std::to_string(o.epochs()) + "), got " +
           options::format_number(o.warmup_epochs()) + ". Fix: warm up for part of the run";
  }
  for (const int64_t r : o.restarts()) {
    if (r <= 0 || r >= o.epochs()) {
      *key = "lr_schedule.restarts";
      return "restarts: epoch " + std::to_string(r) + " is outside (0, epochs). Fix: list epochs where a new LR cycle "
             "starts, e.g. [5]";
    }
  }
  if (o.nesterov() && o.momentum() <= 0) {
    *key = "optimizer.nesterov";
    return "nesterov needs momentum > 0. Fix: set momentum, e.g. 0.9, or nesterov false";
  }
  if (o.device() != "cpu" && o.device().rfind("cuda", 0) != 0) {
    *key = "device";
    return "unknown device \"" + o.device() + "\"; expected cpu or cuda[:N]";
  }
  if (o.device() != "cpu" && !torch::cuda::is_available()) {
    *key = "device";
    return "device \"" + o.device() + "\" requested but this LibTorch has no CUDA device. Fix: set training.device to cpu";
  }
  return {};
}
}  // namespace

std::string TrainOptions::problem(std::string* key) const {
  return options::first_problem<TrainOptions>(specs(), *this, cross_check, key);
}

void TrainOptions::validate() const { options::validate<TrainOptions>(specs(), *this, "training.", cross_check); }

Trainer::Trainer(models::ModelPtr model, std::shared_ptr<data::Dataset> train, std::shared_ptr<data::Dataset> eval,
                 TrainOptions options)
    : model_(std::move(model)), train_(std::move(train)), eval_(std::move(eval)), options_(std::move(options)),
      device_(options_.device()) {
  TORCH_CHECK_VALUE(model_ && train_ && eval_, "Trainer: model and datasets must be set");
  options_.validate();
  TORCH_CHECK_VALUE(train_->size() > 0 && eval_->size() > 0, "Trainer: a dataset is empty (train ", train_->size(),
                    ", eval ", eval_->size(), "). Fix: check the data paths");
  if (options_.retain_freed_memory()) retain_freed_memory();
  torch::set_num_threads(options_.threads() > 0 ? options_.threads()
                                                : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  model_->to(device_);
  if (options_.channels_last() && device_.is_cpu()) nn::to_memory_format(*model_, torch::MemoryFormat::ChannelsLast);
  if (options_.bn_l1() > 0) add_callback(std::make_shared<BnL1Penalty>(options_.bn_l1()));
  // Two groups when 1-D parameters (biases, norm weights) are spared weight decay; resume builds
  // the same groups, so a checkpoint's optimizer state fits.
  std::vector<torch::Tensor> decayed, spared;
  for (const auto& p : model_->parameters()) (p.dim() < 2 && !options_.decay_biases_and_norms() ? spared : decayed).push_back(p);
  auto groups = [&](const auto& defaults) {
    std::vector<torch::optim::OptimizerParamGroup> out{torch::optim::OptimizerParamGroup(decayed)};
    if (spared.empty()) return out;
    auto no_decay = defaults;
    no_decay.weight_decay(0);
    out.emplace_back(spared, std::make_unique<std::decay_t<decltype(defaults)>>(no_decay));
    return out;
  };
  if (options_.optimizer() == Optimizer::Sgd) {
    const auto o = torch::optim::SGDOptions(options_.lr())
                       .momentum(options_.momentum())
                       .nesterov(options_.nesterov())
                       .weight_decay(options_.weight_decay());
    optimizer_ = std::make_unique<torch::optim::SGD>(groups(o), o);
  } else {
    const auto o = torch::optim::AdamWOptions(options_.lr()).weight_decay(options_.weight_decay());
    optimizer_ = std::make_unique<torch::optim::AdamW>(groups(o), o);
  }
}

int64_t Trainer::batches_per_epoch() const {
  const int64_t all = train_->size() / options_.batch_size() + (train_->size() % options_.batch_size() ? 1 : 0);
  return options_.max_batches() > 0 ? std::min(all, options_.max_batches()) : all;
}

double Trainer::lr_at(double epoch) const {
  const auto& o = options_;
  // The cycle `epoch` falls in: [begin, end), restarted cycles peaking at lr * restart_scale.
  double begin = 0, end = static_cast<double>(o.epochs()), base = o.lr();
  for (const int64_t r : o.restarts()) {
    if (static_cast<double>(r) <= epoch) {
      begin = static_cast<double>(r);
      base = o.lr() * o.restart_scale();
    } else {
      end = std::min(end, static_cast<double>(r));
    }
  }
  const double warmup = begin == 0 ? o.warmup_epochs() : 0.0;
  epoch -= begin;
  const double total = end - begin;
  if (epoch < warmup) return base * (epoch + 1.0 / std::max<int64_t>(1, batches_per_epoch())) / warmup;
  const double t = (epoch - warmup) / std::max(1e-9, total - warmup);  // [0, 1)
  if (o.lr_schedule() == LrSchedule::Step) return base * std::pow(o.gamma(), std::floor(epoch / static_cast<double>(o.step_size())));
  if (o.lr_schedule() == LrSchedule::Cosine) return 0.5 * base * (1 + std::cos(M_PI * t));
  if (o.lr_schedule() == LrSchedule::Linear) return base * (1 - t);
  if (o.lr_schedule() == LrSchedule::OneCycle) {
    // Up from base/25 over the first 30%, then cosine down to base/1e4.
    const double up = 0.3;
    if (t < up) return base / 25 + (base - base / 25) * t / up;
    return base / 1e4 + 0.5 * (base - base / 1e4) * (1 + std::cos(M_PI * (t - up) / (1 - up)));
  }
  return base;
}

nn::Inputs Trainer::prepare(const nn::Inputs& inputs) const {
  const bool channels_last = options_.channels_last() && device_.is_cpu();
  return inputs.map([&](const torch::Tensor& t) {
    auto x = t.to(device_);
    // Images only: token ids and masks keep their layout.
    if (channels_last && x.dim() == 4 && x.is_floating_point()) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    return x;
  });
}

nn::Inputs Trainer::example(int64_t batch) { return prepare(eval_->example(batch)); }

Evaluation Trainer::evaluate() {
  auto model = model_;
  return evaluate(*model_, [model](const nn::Inputs& x) { return model->forward_inputs(x); });
}

double macro_f1(const torch::Tensor& confusion) {
  TORCH_CHECK_VALUE(confusion.dim() == 2 && confusion.size(0) == confusion.size(1),
                    "macro_f1: the confusion matrix must be square [classes, classes], got ", confusion.sizes());
  const auto c = confusion.to(torch::kCPU, torch::kDouble);
  const auto tp = c.diagonal();
  const auto support = c.sum(1), predicted = c.sum(0);
  const auto denominator = support + predicted;  // 2 TP + FP + FN
  const auto present = denominator.gt(0);
  const int64_t classes = present.sum().item<int64_t>();
  if (classes == 0) return 0.0;
  const auto f1 = (2 * tp).masked_select(present) / denominator.masked_select(present);
  return 100.0 * f1.sum().item<double>() / static_cast<double>(classes);
}

Evaluation Trainer::evaluate(torch::nn::Module& model, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                             int64_t max_batches) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  data::Loader loader(*eval_, options_.eval_batch_size(), false, options_.seed());
  if (group_) loader.shard(group_->rank(), group_->world_size(), false);
  loader.start(0);
  data::Batch b;
  int64_t top1 = 0, top5 = 0, n = 0;
  Evaluation e;
  const int64_t ranks = group_ ? group_->world_size() : 1;
  const int64_t limit = max_batches > 0 ? (max_batches + ranks - 1) / ranks : -1;
  for (int64_t read = 0; read != limit && loader.next(b); ++read) {
    const auto logits = forward(prepare(b.inputs));
    const auto y = b.y.to(device_);
    const int64_t k = std::min<int64_t>(5, logits.size(1));
    const auto pred = std::get<1>(logits.topk(k, 1));
    const auto hit = pred.eq(y.unsqueeze(1));
    top1 += hit.select(1, 0).sum().item<int64_t>();
    top5 += hit.any(1).sum().item<int64_t>();
    n += y.size(0);
    const int64_t classes = std::max(eval_->num_classes(), logits.size(1));
    if (!e.confusion.defined()) e.confusion = torch::zeros({classes, classes}, torch::kLong);
    const auto cell = (y * classes + pred.select(1, 0)).to(torch::kCPU);
    e.confusion.view(-1).add_(torch::bincount(cell, {}, classes * classes));
  }
  model.train(was_training);
  if (group_) {
    // Every rank read other batches: sum the counts and the confusion matrices (sized alike).
    auto classes = torch::full({1}, e.confusion.defined() ? e.confusion.size(0) : eval_->num_classes(), torch::kLong);
    std::vector<torch::Tensor> most{classes};
    group_->allreduce_max(most, "the evaluation's class count");
    const int64_t c = classes.item<int64_t>();
    auto confusion = torch::zeros({c, c}, torch::kLong);
    if (e.confusion.defined()) confusion.narrow(0, 0, e.confusion.size(0)).narrow(1, 0, e.confusion.size(1)).copy_(e.confusion);
    std::vector<torch::Tensor> sums{torch::tensor({top1, top5, n}, torch::kLong), confusion};
    group_->allreduce_sum(sums, "the evaluation's counts");
    top1 = sums[0][0].item<int64_t>();
    top5 = sums[0][1].item<int64_t>();
    n = sums[0][2].item<int64_t>();
    e.confusion = sums[1];
  }
  TORCH_CHECK_VALUE(n > 0, "evaluate: the eval set is empty. Fix: give the recipe's data an eval split with examples");
  e.top1 = 100.0 * static_cast<double>(top1) / static_cast<double>(n);
  e.top5 = 100.0 * static_cast<double>(top5) / static_cast<double>(n);
  e.macro_f1 = macro_f1(e.confusion);
  return e;
}

void Trainer::calibrate(const std::function<torch::Tensor(const nn::Inputs&)>& forward, int64_t batches) {
  torch::NoGradGuard no_grad;
  data::Loader loader(*train_, options_.batch_size(), false, options_.seed());
  loader.start(0);
  data::Batch b;
  for (int64_t i = 0; i < batches && loader.next(b); ++i) forward(prepare(b.inputs));
}

bool Trainer::fit(int64_t start_epoch) {
  stop_flag() = false;
  for (auto& c : callbacks_) c->on_train_begin(*this);
  data::Loader loader(*train_, options_.batch_size(), true, options_.seed(), /*drop_last=*/true);
  if (group_) loader.shard(group_->rank(), group_->world_size(), true);
  const int64_t per_epoch = batches_per_epoch();
  for (int64_t epoch = start_epoch; epoch < options_.epochs(); ++epoch) {
    // Every epoch's randomness (dropout, augmentation) derives from (seed, epoch), so a resumed
    // run repeats an unbroken one.
    torch::manual_seed(options_.seed() * 7919ULL + static_cast<uint64_t>(epoch));
    // Train mode first, so a callback may put parts of the model in eval mode (QAT's frozen batch norms).
    model_->train();
    for (auto& c : callbacks_) c->on_epoch_begin(*this, epoch);
    const auto t0 = std::chrono::steady_clock::now();
    loader.start(epoch);
    data::Batch b;
    EpochMetrics m;
    m.epoch = epoch;
    int64_t batch = 0;
    epoch_loss_sum_ = 0;
    epoch_batches_ = epoch_correct_ = epoch_seen_ = 0;
    while (batch < per_epoch && loader.next(b)) {
      const double lr = lr_at(static_cast<double>(epoch) + static_cast<double>(batch) / static_cast<double>(per_epoch));
      for (auto& g : optimizer_->param_groups()) g.options().set_lr(lr);
      m.lr = lr;
      const int64_t step = epoch * per_epoch + batch;
      const auto y = b.y.to(device_);
      const auto [logits, loss] = forward_backward(b, y, step);
      for (auto& c : callbacks_) c->on_after_backward(*this, epoch, batch);
      if (options_.max_grad_norm() > 0) torch::nn::utils::clip_grad_norm_(model_->parameters(), options_.max_grad_norm());
      optimizer_->step();
      if (group_) broadcast_buffers("rank 0's buffers after step " + std::to_string(step));
      const double l = loss.item<double>();
      epoch_loss_sum_ += l;
      ++epoch_batches_;
      epoch_correct_ += logits.argmax(1).eq(y).sum().item<int64_t>();
      epoch_seen_ += y.size(0);
      for (auto& c : callbacks_) c->on_batch_end(*this, epoch, batch, l);
      ++batch;
      const int64_t every = options_.dist_check_every();
      if (group_ && every > 0 && (step + 1) % every == 0) check_replicas("after step " + std::to_string(step));
      if (stop_requested_everywhere()) return false;
    }
    m.batches = batch;
    const double ms = 1000.0 / static_cast<double>(std::max<int64_t>(1, batch));
    m.step_ms = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * ms;
    if (sync_ && batch > 0) {
      m.allreduce_wait_ms = sync_->stats().wait_seconds * ms;
      m.bytes_reduced_per_step = sync_->stats().bytes_per_step;
      sync_->reset_stats();
    }
    if (group_) reduce_epoch_metrics();
    m.loss = running_train_loss();
    m.train_top1 = running_train_top1();
    last_evaluation_ = evaluate();
    m.top1 = last_evaluation_.top1;
    m.top5 = last_evaluation_.top5;
    m.macro_f1 = last_evaluation_.macro_f1;
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    history_.push_back(m);
    check_replicas("at the end of epoch " + std::to_string(epoch));
    for (auto& c : callbacks_) c->on_epoch_end(*this, m);
    if (stop_requested_everywhere()) return false;
  }
  for (auto& c : callbacks_) c->on_train_end(*this);
  return true;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::forward_backward(const data::Batch& b, const torch::Tensor& y,
                                                                  int64_t step) {
  optimizer_->zero_grad();
  if (sync_) sync_->prepare(*model_);
  auto logits = model_->forward_inputs(prepare(b.inputs));
  auto loss = torch::nn::functional::cross_entropy(
      logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(options_.label_smoothing()));
  loss.backward();
  if (sync_) sync_->finish(step);  // the mean gradient over the ranks, before anything reads it
  return {logits, loss};
}

void Trainer::backward_only(int64_t epoch, int64_t first, int64_t count, const std::function<void()>& on_gradients) {
  data::Loader loader(*train_, options_.batch_size(), true, options_.seed(), /*drop_last=*/true);
  if (group_) loader.shard(group_->rank(), group_->world_size(), true);
  loader.start(epoch);
  data::Batch b;
  const bool was_training = model_->is_training();
  model_->train();
  // Train-mode forwards move batch-norm statistics; these passes must leave the model as it was.
  std::vector<torch::Tensor> buffers, saved;
  for (const auto& t : model_->buffers()) buffers.push_back(t), saved.push_back(t.clone());
  for (int64_t i = 0; i < first + count && loader.next(b); ++i) {
    if (i < first) continue;
    forward_backward(b, b.y.to(device_), -1 - i);
    on_gradients();
  }
  optimizer_->zero_grad();
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
  model_->train(was_training);
}

void Trainer::distribute(std::shared_ptr<dist::ProcessGroup> group) {
  TORCH_CHECK_VALUE(group, "Trainer::distribute: no process group");
  const int64_t world = group->world_size();
  TORCH_CHECK_VALUE(options_.batch_size() % world == 0, "training.batch_size ", options_.batch_size(),
                    " does not split over ", world, " processes. Fix: a multiple of ", world, " (the global batch stays ",
                    "batch_size; each rank reads batch_size / ", world, " of it)");
  TORCH_CHECK_VALUE(train_->size() >= options_.batch_size(), "the training set has ", train_->size(),
                    " examples, fewer than one global batch (training.batch_size ", options_.batch_size(),
                    "): some of the ", world, " processes would get none. Fix: a smaller batch_size or more data");
  group_ = std::move(group);
  sync_ = std::make_unique<dist::GradientSync>(group_, options_.dist_bucket_mb());
  // Rank 0's starting point everywhere, as DistributedDataParallel does when it wraps a model.
  std::vector<torch::Tensor> state;
  for (const auto& p : model_->parameters()) state.push_back(p);
  for (const auto& b : model_->buffers()) state.push_back(b);
  group_->broadcast(state, 0, "rank 0's initial parameters and buffers");
}

void Trainer::broadcast_buffers(const std::string& what) {
  if (!group_) return;
  std::vector<torch::Tensor> buffers;
  for (const auto& b : model_->buffers()) buffers.push_back(b);
  // LSQ scales are parameters that the observers also write from each rank's own batch.
  for (const auto& s : quant::learnable_scales(*model_)) buffers.push_back(s);
  if (!buffers.empty()) group_->broadcast(buffers, 0, what);
}

void Trainer::check_replicas(const std::string& when) {
  if (!group_) return;
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : model_->named_parameters()) named.emplace_back(p.key(), p.value());
  for (const auto& b : model_->named_buffers()) named.emplace_back(b.key(), b.value());
  group_->check_replicas(named, when);
}

void Trainer::reduce_epoch_metrics() {
  std::vector<torch::Tensor> sums{torch::tensor({epoch_loss_sum_}, torch::kDouble),
                                  torch::tensor({epoch_batches_, epoch_correct_, epoch_seen_}, torch::kLong)};
  group_->allreduce_sum(sums, "the epoch's training loss");
  epoch_loss_sum_ = sums[0][0].item<double>();
  epoch_batches_ = sums[1][0].item<int64_t>();
  epoch_correct_ = sums[1][1].item<int64_t>();
  epoch_seen_ = sums[1][2].item<int64_t>();
}

bool Trainer::stop_requested_everywhere() {
  if (!group_) return stop_flag();
  std::vector<torch::Tensor> flag{torch::full({1}, stop_flag() ? 1 : 0, torch::kLong)};
  group_->allreduce_max(flag, "the stop flag");
  if (flag[0].item<int64_t>() > 0) stop_flag() = true;
  return stop_flag();
}

std::pair<int64_t, int64_t> measure_size(Trainer& trainer) {
  auto model = trainer.model();
  const auto c = measure::count_ops(model, trainer.example(1));
  return {c.params, c.macs};
}

}  // namespace libprune::train
