#include "comparison.h"

#include "libprune/measure/count_ops.h"
#include "libprune/measure/latency.h"
#include "libprune/nn/memory_format.h"

#include <sstream>

namespace libprune::report::detail {
namespace {

int64_t file_size(torch::nn::Module& model) {
  std::ostringstream s;
  torch::serialize::OutputArchive archive;
  model.save(archive);
  archive.save_to(s);
  return static_cast<int64_t>(s.str().size());
}

// Keeps the smaller figure under `key`; true when `ms` is the new best.
bool keep_min(json& out, const std::string& key, double ms) {
  if (out.contains(key) && out[key].get<double>() <= ms) return false;
  out[key] = ms;
  return true;
}

std::pair<double, double> last_accuracy(train::Trainer& trainer) {
  if (!trainer.history().empty()) return {trainer.history().back().top1, trainer.history().back().top5};
  return trainer.evaluate();
}

}  // namespace

Comparison::Comparison(train::Trainer& trainer, std::function<models::ModelPtr()> build, ReportOptions options)
    : trainer_(trainer), build_(std::move(build)), options_(std::move(options)) {}

json Comparison::measure() {
  const auto [top1, top5] = last_accuracy(trainer_);
  const auto [params, macs] = train::measure_size(trainer_);
  return json{{"accuracy", top1}, {"top5", top5}, {"params", params}, {"macs", macs}, {"size_bytes", file_size(*trainer_.model())}};
}

void Comparison::keep_dense(bool copy_weights) {
  dense_copy_ = build_();
  dense_copy_->to(trainer_.device());
  if (!copy_weights) return;
  torch::NoGradGuard no_grad;
  auto model = trainer_.model();
  auto src = model->named_parameters(true);
  for (auto& p : dense_copy_->named_parameters(true)) p.value().copy_(src[p.key()]);
  auto bsrc = model->named_buffers(true);
  for (auto& b : dense_copy_->named_buffers(true)) b.value().copy_(bsrc[b.key()]);
}

void Comparison::record_dense() {
  if (!dense_.is_null()) return;
  dense_ = measure();
  keep_dense(true);
}

// Latency of `net` per batch size, as it would be deployed: on CPU both memory formats are timed
// (thin pruned layers can favour NCHW) and, with latency_threads 0, fewer threads than the
// training's too (small batches often run faster on fewer). The fastest is kept, and named.
void Comparison::time(models::ModelPtr net, json& out) {
  const bool cpu = trainer_.device().is_cpu();
  const int threads = options_.latency_threads();
  for (const int64_t batch : options_.latency_batches()) {
    const std::string key = "latency_ms_b" + std::to_string(batch);
    for (const bool cl : cpu ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
      const char* format = cl ? "channels_last" : "nchw";
      const auto memory = cl ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
      nn::to_memory_format(*net, memory);
      const auto inputs = trainer_.example(batch).map([memory](const torch::Tensor& t) {
        return t.dim() == 4 && t.is_floating_point() ? t.contiguous(memory) : t;
      });
      const auto lat = measure::measure_latency(net, inputs,
                                                measure::LatencyOptions()
                                                    .runs(options_.latency_runs())
                                                    .warmup(options_.latency_warmup())
                                                    .threads(threads)
                                                    .search_threads(cpu && threads == 0)
                                                    .channels_last(cl)
                                                    .fold_batchnorm(options_.fold_batchnorm()));
      keep_min(out, key + "_" + format, lat.median_ms);
      if (cpu && threads == 0) {
        for (const auto& [n, ms] : lat.median_ms_by_threads) keep_min(out, key + "_threads" + std::to_string(n), ms);
      }
      if (keep_min(out, key, lat.median_ms)) {
        out["latency_format_b" + std::to_string(batch)] = format;
        if (cpu) out["latency_threads_b" + std::to_string(batch)] = lat.threads;
      }
    }
  }
  const bool channels_last = trainer_.options().channels_last() && cpu;
  nn::to_memory_format(*net, channels_last ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
}

void Comparison::finish() {
  pruned_ = measure();
  if (dense_.is_null()) {
    dense_ = pruned_;
    keep_dense(true);
  }
  if (!dense_copy_) keep_dense(false);
  // Interleaved rounds, the best of each: dense and pruned see the same machine state.
  for (json* side : {&dense_, &pruned_}) {
    for (auto it = side->begin(); it != side->end();) {
      it = it.key().rfind("latency_", 0) == 0 ? side->erase(it) : std::next(it);
    }
  }
  for (int round = 0; round < 3; ++round) {
    time(dense_copy_, dense_);
    time(trainer_.model(), pruned_);
  }
  dense_copy_.reset();
}

}  // namespace libprune::report::detail
