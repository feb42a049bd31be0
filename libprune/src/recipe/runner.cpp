#include "libprune/recipe/runner.h"

#include "libprune/data/cifar.h"
#include "libprune/data/image_folder.h"
#include "libprune/data/mnist.h"
#include "libprune/io/checkpoint.h"
#include "libprune/io/file.h"
#include "libprune/io/state_dict.h"
#include "libprune/layers/apply.h"
#include "libprune/models/registry.h"
#include "libprune/nn/memory_format.h"
#include "libprune/recipe/recipe.h"
#include "libprune/measure/count_ops.h"
#include "libprune/measure/latency.h"
#include "libprune/train/callbacks.h"

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <sstream>

namespace libprune::recipe {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

struct Datasets {
  std::shared_ptr<data::Dataset> train, eval;
  int64_t channels = 1;
};

Datasets make_data(const json& d) {
  const std::string kind = d["kind"];
  Datasets out;
  auto tensors = [&](const data::MnistData& m, double mean, double std, int64_t classes, bool train) {
    auto x = m.images.dim() == 3 ? data::normalize_images(m.images, mean, std)
                                 : m.images.to(torch::kFloat32).div_(255.0).sub_(mean).div_(std);
    auto set = std::make_shared<data::TensorDataset>(x, m.labels, classes, train && d["flip"].get<bool>(),
                                                     train ? d["pad_crop"].get<int64_t>() : 0);
    return data::limit(set, d[train ? "limit_train" : "limit_eval"].get<int64_t>());
  };
  if (kind == "fashion_mnist" || kind == "mnist") {
    const std::string dir = d["path"].get<std::string>().empty() ? std::string(data::kFashionMnistDir) : d["path"].get<std::string>();
    const double mean = kind == "mnist" ? 0.1307 : 0.2860, std = kind == "mnist" ? 0.3081 : 0.3530;
    out.train = tensors(data::read_mnist(dir, data::Split::Train), mean, std, 10, true);
    out.eval = tensors(data::read_mnist(dir, data::Split::Test), mean, std, 10, false);
    out.channels = 1;
  } else if (kind == "cifar10" || kind == "cifar100") {
    const int classes = kind == "cifar10" ? 10 : 100;
    TORCH_CHECK_VALUE(!d["path"].get<std::string>().empty(), "data.path is empty for ", kind,
                      ". Fix: --set data.path=/path/to/cifar-binary-folder");
    out.train = tensors(data::read_cifar(d["path"], data::Split::Train, classes), 0.4734, 0.2516, classes, true);
    out.eval = tensors(data::read_cifar(d["path"], data::Split::Test, classes), 0.4734, 0.2516, classes, false);
    out.channels = 3;
  } else if (kind == "image_folder") {
    const std::string root = d["path"];
    TORCH_CHECK_VALUE(!root.empty(), "data.path is empty for image_folder. Fix: --set data.path=/path/to/imagenet "
                      "(with train/ and val/ class folders)");
    auto opts = data::ImageFolderOptions()
                    .crop(d["crop"].get<int64_t>())
                    .resize(d["resize"].get<int64_t>())
                    .min_scale(d["min_scale"].get<double>())
                    .skip_unreadable(d["skip_unreadable"].get<bool>())
                    .threads(d["threads"].get<int>());
    out.train = std::make_shared<data::ImageFolder>((fs::path(root) / d["train_dir"].get<std::string>()).string(), opts);
    out.eval = std::make_shared<data::ImageFolder>((fs::path(root) / d["val_dir"].get<std::string>()).string(), opts);
    out.channels = 3;
  } else if (kind == "synthetic") {
    // Random images whose class shifts their mean: learnable, for quick runs and tests.
    const int64_t s = d["synthetic_size"], c = d["synthetic_channels"], k = d["synthetic_classes"];
    auto make = [&](int64_t n, uint64_t seed) {
      auto gen = at::detail::createCPUGenerator(seed);
      auto y = torch::randint(0, k, {n}, gen, torch::kLong);
      auto x = torch::randn({n, c, s, s}, gen) + y.to(torch::kFloat32).view({-1, 1, 1, 1}) / static_cast<double>(k);
      return std::make_shared<data::TensorDataset>(x, y, k);
    };
    const int64_t ntrain = d["limit_train"].get<int64_t>() > 0 ? d["limit_train"].get<int64_t>() : 256;
    const int64_t neval = d["limit_eval"].get<int64_t>() > 0 ? d["limit_eval"].get<int64_t>() : 128;
    out.train = make(ntrain, 1);
    out.eval = make(neval, 2);
    out.channels = c;
  } else {
    TORCH_CHECK_VALUE(false, "unknown data.kind \"", kind,
                      "\"; expected one of fashion_mnist, mnist, cifar10, cifar100, image_folder, synthetic");
  }
  return out;
}

int64_t file_size(torch::nn::Module& model) {
  std::ostringstream s;
  torch::serialize::OutputArchive archive;
  model.save(archive);
  archive.save_to(s);
  return static_cast<int64_t>(s.str().size());
}

std::string id_of(json r) {
  r.erase("output_dir");
  r.erase("report");
  r["training"].erase("progress");
  r["training"].erase("threads");
  r["training"].erase("retain_freed_memory");
  return std::to_string(std::hash<std::string>{}(r.dump()));
}

}  // namespace

RunResult run(const std::string& recipe_path, const RunOptions& options) {
  const json r = json::parse(load(recipe_path, options.sets));
  const auto started = std::chrono::steady_clock::now();
  RunResult result;
  result.output_dir = r["output_dir"];
  std::error_code ec;
  fs::create_directories(result.output_dir, ec);
  TORCH_CHECK_VALUE(fs::is_directory(result.output_dir), "cannot create output_dir '", result.output_dir,
                    "'. Fix: --set output_dir=<a writable folder>");

  const json& t = r["training"];
  auto data = make_data(r["data"]);
  const auto& m = r["model"];
  auto model_options = models::ModelOptions()
                           .num_classes(m["num_classes"].get<int64_t>() > 0 ? m["num_classes"].get<int64_t>() : data.train->num_classes())
                           .in_channels(m["in_channels"].get<int64_t>() > 0 ? m["in_channels"].get<int64_t>() : data.channels);
  torch::manual_seed(t["seed"].get<uint64_t>());
  auto model = models::create(m["name"], model_options);
  if (!m["weights"].get<std::string>().empty()) io::load_state_dict(*model, m["weights"].get<std::string>());

  const auto& opt = t["optimizer"];
  const auto& lrs = t["lr_schedule"];
  auto train_options = train::TrainOptions()
                           .epochs(t["epochs"])
                           .batch_size(t["batch_size"])
                           .eval_batch_size(t["eval_batch_size"])
                           .optimizer(opt["name"])
                           .lr(opt["lr"])
                           .momentum(opt["momentum"])
                           .nesterov(opt["nesterov"])
                           .weight_decay(opt["weight_decay"])
                           .lr_schedule(lrs["name"])
                           .warmup_epochs(lrs["warmup_epochs"])
                           .step_size(lrs["step_size"])
                           .gamma(lrs["gamma"])
                           .restarts(lrs["restarts"].get<std::vector<int64_t>>())
                           .restart_scale(lrs["restart_scale"])
                           .label_smoothing(t["label_smoothing"])
                           .channels_last(t["channels_last"])
                           .threads(t["threads"])
                           .device(t["device"])
                           .seed(t["seed"])
                           .max_batches(t["max_batches"])
                           .progress(t["progress"])
                           .retain_freed_memory(t["retain_freed_memory"]);
  train::Trainer trainer(model, data.train, data.eval, train_options);

  auto example = trainer.example(1);
  auto forward = [model, example]() { return std::vector<torch::Tensor>{model->forward(example)}; };
  auto plans = std::make_shared<train::PlanHistory>();
  std::vector<std::pair<std::shared_ptr<prune::Pruner>, schedule::Schedule>> stages;
  for (size_t i = 0; i < r["pruning"].size(); ++i) {
    const auto& s = r["pruning"][i];
    std::vector<std::pair<std::string, double>> overrides;
    for (const auto& [k, v] : s["overrides"].items()) overrides.emplace_back(k, v.get<double>());
    TORCH_CHECK_VALUE(s["scope"] == "local" || s["scope"] == "global", recipe_path, " at pruning.", i,
                      ".scope: unknown scope ", s["scope"].dump(), ". Fix: use local or global");
    auto popts = prune::PrunerOptions()
                     .ratio(0.0)
                     .importance(s["criterion"])
                     .reduction(s["reduction"])
                     .normalize(s["normalize"])
                     .seed(s["seed"])
                     .global_ranking(s["scope"] == "global")
                     .ignored(s["ignored"].get<std::vector<std::string>>())
                     .overrides(overrides)
                     .round_to(s["round_to"])
                     .max_ratio(s["max_ratio"])
                     .min_channels(s["min_channels"])
                     .prune_hidden(s["prune_hidden"]);
    const auto& sc = s["schedule"];
    schedule::Schedule sched(schedule::ScheduleOptions()
                                 .kind(schedule::parse_schedule(sc["kind"]))
                                 .target(s["target_ratio"])
                                 .initial(sc["initial"])
                                 .start_epoch(sc["start_epoch"])
                                 .end_epoch(sc["end_epoch"])
                                 .frequency(sc["frequency"])
                                 .steps(sc["steps"]));
    auto pruner = std::make_shared<prune::Pruner>(std::static_pointer_cast<torch::nn::Module>(model), forward, popts);
    pruner->record_sizes();  // the base ratios count against, before any replayed cut
    stages.emplace_back(pruner, sched);
  }

  // Dense figures: taken just before the first cut (or at the end, with no pruning).
  json dense;
  const int runs = r["report"]["latency_runs"], warmup = r["report"]["latency_warmup"],
            lat_threads = r["report"]["latency_threads"];
  const bool fold = r["report"]["fold_batchnorm"];
  // Latency of `net` per batch size, as it would be deployed: on CPU both memory formats are timed
  // (thin pruned layers can favour NCHW) and, with latency_threads 0, fewer threads than the
  // training's too (small batches often run faster on fewer). The fastest is kept, and named.
  const bool cpu = trainer.device().is_cpu();
  auto keep_min = [](json& out, const std::string& key, double ms) {
    if (out.contains(key) && out[key].get<double>() <= ms) return false;
    out[key] = ms;
    return true;
  };
  auto time_model = [&](models::ModelPtr net, json& out) {
    for (const auto& b : r["report"]["latency_batches"]) {
      const int64_t batch = b.get<int64_t>();
      const std::string key = "latency_ms_b" + std::to_string(batch);
      for (const bool cl : cpu ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
        const char* format = cl ? "channels_last" : "nchw";
        nn::to_memory_format(*net, cl ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
        const auto x = trainer.example(batch).contiguous(cl ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous);
        const auto lat = measure::measure_latency(net, x,
                                                 measure::LatencyOptions()
                                                     .runs(runs)
                                                     .warmup(warmup)
                                                     .threads(lat_threads)
                                                     .search_threads(cpu && lat_threads == 0)
                                                     .channels_last(cl)
                                                     .fold_batchnorm(fold));
        keep_min(out, key + "_" + format, lat.median_ms);
        if (cpu && lat_threads == 0) {
          for (const auto& [threads, ms] : lat.median_ms_by_threads) {
            keep_min(out, key + "_threads" + std::to_string(threads), ms);
          }
        }
        if (keep_min(out, key, lat.median_ms)) {
          out["latency_format_b" + std::to_string(batch)] = format;
          if (cpu) out["latency_threads_b" + std::to_string(batch)] = lat.threads;
        }
      }
    }
    nn::to_memory_format(*net, t["channels_last"].get<bool>() && cpu ? torch::MemoryFormat::ChannelsLast
                                                                     : torch::MemoryFormat::Contiguous);
  };
  auto measure = [&](double top1, double top5) {
    const auto c = measure::count_ops(model, trainer.example(1));
    return json{{"accuracy", top1}, {"top5", top5}, {"params", c.params}, {"macs", c.macs}, {"size_bytes", file_size(*model)}};
  };
  // The dense model's copy, kept from the first cut so both are timed side by side at the end
  // (the machine is shared and noisy: figures minutes apart do not compare).
  models::ModelPtr dense_copy;
  auto keep_dense = [&](bool copy_weights) {
    dense_copy = models::create(m["name"], model_options);
    dense_copy->to(trainer.device());
    if (!copy_weights) return;
    torch::NoGradGuard no_grad;
    auto src = model->named_parameters(true);
    for (auto& p : dense_copy->named_parameters(true)) p.value().copy_(src[p.key()]);
    auto bsrc = model->named_buffers(true);
    for (auto& b : dense_copy->named_buffers(true)) b.value().copy_(bsrc[b.key()]);
  };
  auto last_accuracy = [&]() {
    if (!trainer.history().empty()) return std::make_pair(trainer.history().back().top1, trainer.history().back().top5);
    return trainer.evaluate();
  };

  int64_t start_epoch = 0;
  double best = -1;
  const std::string id = id_of(r);
  const std::string last = (fs::path(result.output_dir) / "last.ckpt").string();
  if (options.resume && fs::exists(last)) {
    const auto meta = io::read_checkpoint_meta(last);
    TORCH_CHECK_VALUE(meta.recipe_id == id, "checkpoint '", last, "' was written by another recipe (or other settings): "
                      "resuming it here would mix two runs. Fix: resume with the recipe and --set values that wrote it, "
                      "or use another output_dir");
    for (const auto& plan : train::plans_from_json(meta.plans_json)) {
      layers::apply_plan(*model, plan);
      plans->push_back(plan);
    }
    if (trainer.options().channels_last() && trainer.device().is_cpu()) {
      nn::to_memory_format(*model, torch::MemoryFormat::ChannelsLast);
    }
    io::load_checkpoint(last, *model, trainer.optimizer());
    start_epoch = meta.epoch;
    best = meta.best_top1;
    dense = json::parse(meta.extra_json).value("dense", json());
    if (options.print) std::cout << "resuming " << last << " after epoch " << start_epoch << " (" << plans->size() << " cuts replayed)\n";
  } else if (options.resume && options.print) {
    std::cout << "no checkpoint at " << last << "; starting from epoch 0\n";
  }

  auto log = std::make_shared<train::MetricsLog>((fs::path(result.output_dir) / "metrics.jsonl").string(), start_epoch > 0);
  if (options.print && t["progress"].get<bool>()) trainer.add_callback(std::make_shared<train::ProgressCallback>());
  if (t["bn_l1"].get<double>() > 0) trainer.add_callback(std::make_shared<train::BnL1Penalty>(t["bn_l1"].get<double>()));
  for (size_t i = 0; i < stages.size(); ++i) {
    const auto& s = r["pruning"][i];
    auto cb = std::make_shared<train::PruningCallback>(stages[i].first, stages[i].second, plans, log,
                                                       s["criterion"] == "taylor" ? s["taylor_batches"].get<int64_t>() : 0);
    cb->verbose = options.print;
    cb->before_first_cut = [&](train::Trainer&) {
      if (dense.is_null()) {
        const auto [top1, top5] = last_accuracy();
        dense = measure(top1, top5);
        keep_dense(true);
      }
    };
    trainer.add_callback(cb);
  }
  // The ratio of the latest cut, of any stage, before a time: what an epoch ending then trained at.
  auto ratio_before = [&stages](double time) {
    double latest = -1, ratio = 0;
    for (const auto& stage : stages) {
      for (const auto& [at, r] : stage.second.steps()) {
        if (at < time - 1e-9 && at >= latest) latest = at, ratio = r;
      }
    }
    return ratio;
  };
  trainer.add_callback(std::make_shared<train::LogCallback>(log, ratio_before));
  trainer.add_callback(std::make_shared<train::CheckpointCallback>(result.output_dir, id, plans, best, [&]() {
    return json({{"dense", dense}}).dump();
  }));

  if (options.stop_after_epochs > 0) {
    struct StopAfter : train::Callback {
      int64_t n;
      explicit StopAfter(int64_t n) : n(n) {}
      void on_epoch_end(train::Trainer&, const train::EpochMetrics& m) override {
        if (m.epoch + 1 >= n) train::Trainer::request_stop();
      }
    };
    trainer.add_callback(std::make_shared<StopAfter>(options.stop_after_epochs));
  }
  if (!trainer.fit(start_epoch)) {
    if (options.print) std::cout << "\nstopped: the last checkpoint (" << last << ") holds the last completed epoch; "
                                    "continue with --resume\n";
    return result;
  }
  const auto [top1, top5] = last_accuracy();
  json pruned = measure(top1, top5);
  if (dense.is_null()) {
    dense = pruned;
    keep_dense(true);
  }
  // Resumed after the first cut, the dense weights are gone: time its architecture, freshly built.
  if (!dense_copy) keep_dense(false);
  // Interleaved rounds, the best of each: dense and pruned see the same machine state.
  for (json* side : {&dense, &pruned}) {
    for (auto it = side->begin(); it != side->end();) {
      it = it.key().rfind("latency_", 0) == 0 ? side->erase(it) : std::next(it);
    }
  }
  for (int round = 0; round < 3; ++round) {
    time_model(dense_copy, dense);
    time_model(model, pruned);
  }
  dense_copy.reset();
  json summary = {{"recipe", r["name"]},
                  {"model", m["name"]},
                  {"dense", dense},
                  {"pruned", pruned},
                  {"cuts", plans->size()},
                  {"epochs", t["epochs"]},
                  {"threads", torch::get_num_threads()},
                  {"latency_batchnorm_folded", fold},
                  {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()}};
  result.summary_json = summary.dump(2);
  io::write_file_atomic((fs::path(result.output_dir) / "summary.json").string(),
                        std::vector<char>(result.summary_json.begin(), result.summary_json.end()), "summary");
  result.completed = true;
  if (options.print) {
    auto row = [&](const char* label, const char* key, double scale, const char* fmt) {
      const double a = dense.value(key, 0.0) * scale, b = pruned.value(key, 0.0) * scale;
      char line[200];
      const std::string f = std::string("%-16s ") + fmt + "  " + fmt + "  %8.2fx\n";
      std::snprintf(line, sizeof line, f.c_str(), label, a, b, b != 0 ? a / b : 0.0);
      std::cout << line;
    };
    std::cout << "\n" << std::string(r["name"]) << " (" << std::string(m["name"]) << ")\n";
    std::printf("%-16s %12s  %12s  %9s\n", "", "dense", "pruned", "ratio");
    std::cout << std::flush;
    row("params (M)", "params", 1e-6, "%12.3f");
    row("MACs (M)", "macs", 1e-6, "%12.2f");
    row("file size (MB)", "size_bytes", 1e-6, "%12.3f");
    for (const auto& b : r["report"]["latency_batches"]) {
      const std::string key = "latency_ms_b" + std::to_string(b.get<int64_t>());
      row(("latency b" + std::to_string(b.get<int64_t>()) + " (ms)").c_str(), key.c_str(), 1, "%12.2f");
    }
    std::printf("%-16s %12.2f  %12.2f  %+8.2f pt\n", "top-1 (%)", dense.value("accuracy", 0.0), pruned.value("accuracy", 0.0),
                pruned.value("accuracy", 0.0) - dense.value("accuracy", 0.0));
    for (const auto& b : r["report"]["latency_batches"]) {
      const std::string n = std::to_string(b.get<int64_t>());
      auto how = [&](const json& side) {
        return side.value("latency_format_b" + n, std::string("?")) +
               (cpu ? ", " + std::to_string(side.value("latency_threads_b" + n, 0)) + " thread(s)" : std::string());
      };
      std::cout << "latency b" << n << " timed as: dense " << how(dense) << "; pruned " << how(pruned) << "\n";
    }
    std::cout << "summary: " << (fs::path(result.output_dir) / "summary.json").string() << std::endl;
  }
  return result;
}

}  // namespace libprune::recipe
