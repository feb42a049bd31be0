#include "libprune/recipe/runner.h"

#include "../report/goal.h"
#include "../report/summary.h"
#include "data.h"
#include "libprune/dist/process_group.h"
#include "libprune/io/file.h"
#include "libprune/io/state_dict.h"
#include "libprune/models/bert_export.h"
#include "libprune/models/registry.h"
#include "libprune/nn/random_guard.h"
#include "libprune/quant/quantize.h"
#include "libprune/recipe/recipe.h"
#include "libprune/train/callbacks.h"
#include "libprune/train/qat_callback.h"
#include "stages.h"

#include <chrono>
#include <filesystem>
#include <functional>
#include <iostream>
#include <thread>

namespace libprune::recipe {
namespace {
using nlohmann::json;
namespace fs = std::filesystem;

// What identifies a run for resuming: the recipe without the keys that do not change its result.
std::string id_of(const std::string& merged) {
  json r = json::parse(merged);
  r.erase("output_dir");
  r.erase("report");
  r["training"].erase("progress");
  r["training"].erase("threads");
  r["training"].erase("retain_freed_memory");
  r["training"].erase("distributed");  // so a run resumes on another number of processes
  return std::to_string(std::hash<std::string>{}(r.dump()));
}

// Stops (like SIGINT) once `n` epochs have completed and been checkpointed.
struct StopAfter : train::Callback {
  int64_t n;
  explicit StopAfter(int64_t n) : n(n) {}
  void on_epoch_end(train::Trainer&, const train::EpochMetrics& m) override {
    if (m.epoch + 1 >= n) train::Trainer::request_stop();
  }
};

// Everything a run holds between its phases.
struct Run {
  const Recipe& recipe;
  RunOptions options;  // print only on rank 0
  std::shared_ptr<dist::ProcessGroup> group;  // null: one process
  std::string output_dir, last;
  models::ModelPtr model;
  std::unique_ptr<train::Trainer> trainer;
  std::shared_ptr<train::PlanHistory> plans = std::make_shared<train::PlanHistory>();
  std::vector<detail::StageRun> stages;
  std::unique_ptr<report::detail::Comparison> comparison;
  std::shared_ptr<train::QatCallback> qat;
  detail::Resumed resumed;
};

// Weights trained with another tokenizer: the token embedding's rows are the vocabulary the
// weights know, and the tokenizer's ids must index it.
void check_vocabulary(const torch::nn::Module& model, const io::StateDict& state, const detail::Datasets& data,
                      const std::string& weights) {
  if (data.vocab_size <= 0) return;
  for (const auto& item : model.named_modules()) {
    const auto* e = item.value()->template as<torch::nn::Embedding>();
    if (!e || e->weight.size(0) != data.vocab_size) continue;
    const auto it = state.find(item.key() + ".weight");
    if (it == state.end() || it->second.dim() != 2 || it->second.size(0) == data.vocab_size) continue;
    TORCH_CHECK_VALUE(false, "model.weights '", weights, "' was trained with a vocabulary of ", it->second.size(0),
                      " tokens (rows of ", it->first, "), but the tokenizer ", data.tokenizer, " has ", data.vocab_size,
                      ". Fix: give the tokenizer those weights were trained with (--set data.tokenizer=<its ",
                      "tokenizer.model>)");
  }
}

// Stages with a target: a latency target costs its cuts with a table measured here, from the dense
// model at the stage's latency_batch, and every target is planned once now, so one the model cannot
// reach fails before training, not at its cut. Rank 0 plans every cut, so only it measures.
void prepare_targets(Run& run, const graph::Forward& forward, const std::function<models::ModelPtr()>& fresh) {
  if (run.group && run.group->rank() != 0) return;
  models::ModelPtr reference;
  for (size_t i = 0; i < run.stages.size(); ++i) {
    const auto& o = run.recipe.pruning[i].pruner;
    if (o.target().empty()) continue;
    auto& pruner = *run.stages[i].pruner;
    if (prune::is_latency_target(o.target())) {
      TORCH_CHECK_VALUE(run.trainer->device().is_cpu(), "pruning.", i, ".target: latency tables are measured on the "
                        "CPU, and this run trains on ", run.trainer->device().str(), ". Fix: use a macs or params "
                        "target, or train on the CPU");
      auto model = run.model;
      const auto forward = [model](const nn::Inputs& in) { return model->forward_inputs(in); };
      const auto inputs = run.trainer->example(o.latency_batch());
      const auto options = measure::LatencyTableOptions().threads(run.recipe.report.latency_threads());
      const auto table = std::make_shared<measure::LatencyTable>(measure::LatencyTable::build(*model, forward, inputs, options));
      pruner.set_latency_table(table);
      // Each later cut measures the model it starts from beside one of the dense shape (built once,
      // without moving the run's random stream), to calibrate the table in its own terms (docs/design.md).
      if (!reference) reference = [&] { const nn::RandomStreamGuard keep; return fresh(); }();
      pruner.set_latency_probe([model, forward, reference, inputs, options, dense_ms = table->dense_ms()] {
        const auto reference_forward = [reference](const nn::Inputs& in) { return reference->forward_inputs(in); };
        return dense_ms * measure::latency_ratio(*model, forward, *reference, reference_forward, inputs, options);
      });
      if (run.options.print) {
        std::cout << "latency table for pruning." << i << " at batch " << o.latency_batch() << ": " << table->to_string()
                  << std::endl;
      }
    }
    // (taylor scores need a batch's gradients: such a target is checked at its cut.)
    if (importance::accumulates(o.importance())) continue;
    try {
      if (o.allocation() == prune::Allocation::sensitivity) {
        // Its scan is taken before the first cut; whether the budget is reachable does not depend on
        // how it is divided, so a stand-in pruner plans it with the criterion's scores.
        prune::Pruner trial(std::static_pointer_cast<torch::nn::Module>(run.model), forward,
                            prune::PrunerOptions(o).ratio(0.0).allocation(prune::Allocation::importance));
        trial.set_latency_table(pruner.latency_table());
        trial.plan();
      } else {
        pruner.plan();
      }
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "pruning.", i, ".target: ", e.what_without_backtrace());
    }
  }
}

void build(Run& run) {
  const auto& r = run.recipe;
  // Rank 0 builds the data first (it may train and save a tokenizer); the others then read it.
  if (run.group && run.group->rank() != 0) run.group->await("data", "rank 0 to prepare the data");
  const auto data = detail::make_data(r.data, run.output_dir);
  if (run.group && run.group->rank() == 0) run.group->announce("data");
  const auto model_options = models::ModelOptions()
                                .num_classes(r.model.num_classes() > 0 ? r.model.num_classes() : data.train->num_classes())
                                .in_channels(r.model.in_channels() > 0 ? r.model.in_channels() : data.channels)
                                .vocab_size(data.vocab_size);
  torch::manual_seed(r.training.seed());
  run.model = models::create(r.model.name(), model_options);
  if (!r.model.weights().empty()) {
    const auto state = io::read_state_dict(r.model.weights());
    check_vocabulary(*run.model, state, data, r.model.weights());
    io::load_state_dict(*run.model, state, r.model.weights());
  }
  auto training = r.training;
  // One GPU per local rank, as torchrun jobs do.
  if (run.group && training.device() == "cuda") training.device("cuda:" + std::to_string(dist::launch_env().local_rank));
  if (run.group && training.threads() == 0) {
    // Every core, shared among this machine's ranks.
    const auto cores = static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
    training.threads(static_cast<int>(std::max<int64_t>(1, cores / dist::launch_env().local_world_size)));
  }
  run.trainer = std::make_unique<train::Trainer>(run.model, data.train, data.eval, training);
  auto example = run.trainer->example(1);
  auto model = run.model;
  const graph::Forward forward = [model, example] { return std::vector<torch::Tensor>{model->forward_inputs(example)}; };
  run.stages = detail::make_stages(r, model, forward);
  const std::string name = r.model.name();
  const auto fresh = [name, model_options] { return models::create(name, model_options); };
  prepare_targets(run, forward, fresh);
  const auto& q = r.quantization;
  if (q.mode() != QuantMode::None && (!r.quant.keep_float().empty() || q.keep_float_worst() > 0)) {
    quant::Report placed;
    try {
      placed = quant::placement(*model, forward, r.quant);  // a bad keep_float name fails now, not after training
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "quantization.keep_float: ", e.what_without_backtrace());
    }
    const auto left = static_cast<int64_t>(placed.quantized.size());
    TORCH_CHECK_VALUE(q.keep_float_worst() < left, "quantization.keep_float_worst: ", q.keep_float_worst(), " of the ",
                      left, " units keep_float leaves quantised; at least one must stay. Fix: keep fewer float");
  }
  report::detail::QuantPlan quant;
  quant.mode = static_cast<report::detail::QuantPlan::Mode>(r.quantization.mode());
  quant.compare = r.quantization.compare();
  quant.options = r.quant;
  quant.calibration_batches = r.quantization.calibration_batches();
  quant.calibration_observer = r.quantization.calibration_observer();
  quant.engine = r.quantization.engine();
  quant.simulate_bits = r.quantization.simulate_bits();
  quant.simulate_epochs = r.quantization.simulate_epochs();
  quant.qat_start_epoch = r.quantization.start_epoch();
  quant.keep_float_worst = r.quantization.keep_float_worst();
  run.comparison = std::make_unique<report::detail::Comparison>(
      *run.trainer, fresh, r.report, run.plans,
      !r.pruning.empty(), quant);
  if (r.quantization.mode() == QuantMode::Qat) {
    const auto& q = r.quantization;
    run.qat = std::make_shared<train::QatCallback>(
        r.quant,
        train::QatSchedule()
            .start_epoch(q.start_epoch())
            .freeze_observers_epoch(q.freeze_observers_epoch())
            .freeze_bn_epoch(q.freeze_bn_epoch()),
        forward);
  }
}

void add_callbacks(Run& run, const std::string& id) {
  auto& trainer = *run.trainer;
  const bool appending = run.resumed.start_epoch > 0;
  // Rank 0 writes the files (metrics, checkpoints); the others train beside it.
  const bool main = trainer.is_main();
  auto log = main ? std::make_shared<train::MetricsLog>((fs::path(run.output_dir) / "metrics.jsonl").string(), appending)
                  : nullptr;
  if (run.options.print && run.recipe.training.progress()) trainer.add_callback(std::make_shared<train::ProgressCallback>());
  auto* comparison = run.comparison.get();
  const auto& report = run.recipe.report;
  const bool print = run.options.print;
  if (print) comparison->printed_to = &std::cout;
  for (const auto& stage : run.stages) {
    auto cb = std::make_shared<train::PruningCallback>(stage.pruner, stage.schedule, run.plans, log, stage.taylor_batches);
    cb->verbose = print;
    const auto pruner = stage.pruner;
    cb->before_first_cut = [comparison, pruner, report, print](train::Trainer& t) {
      comparison->record_dense();
      if (report.sensitivity_step() <= 0 || !comparison->sensitivity().is_null()) return;
      auto model = t.model();
      const auto forward = [model](const nn::Inputs& x) { return model->forward_inputs(x); };
      const auto scan = pruner->sensitivity([&] { return t.evaluate(*model, forward, report.sensitivity_batches()).top1; },
                                            report.sensitivity_ratios());
      pruner->set_sensitivity(std::make_shared<prune::Sensitivity>(scan));  // for allocation sensitivity
      comparison->set_sensitivity(json::parse(scan.to_json()));
      if (print) std::cout << "sensitivity (top-1 drop, " << report.sensitivity_batches() << " eval batches):\n" << scan.to_string() << std::flush;
    };
    trainer.add_callback(cb);
  }
  if (run.qat) {
    run.qat->verbose = run.options.print;
    run.qat->log = log;
    run.qat->before_prepare = [comparison](train::Trainer&) {
      comparison->record_dense();
      comparison->record_pruned();
      comparison->scan_quantization();
    };
    trainer.add_callback(run.qat);
  }
  const auto* stages = &run.stages;
  if (main) {
    trainer.add_callback(
        std::make_shared<train::LogCallback>(log, [stages](double time) { return detail::ratio_before(*stages, time); }));
    trainer.add_callback(std::make_shared<train::CheckpointCallback>(
        run.output_dir, id, run.plans, run.resumed.best_top1,
        [comparison]() { return json({{"rows", comparison->saved()}}).dump(); }));
  }
  if (run.options.stop_after_epochs > 0) trainer.add_callback(std::make_shared<StopAfter>(run.options.stop_after_epochs));
}

void resume_if_asked(Run& run, const std::string& id) {
  if (!run.options.resume) return;
  if (!fs::exists(run.last)) {
    if (run.options.print) std::cout << "no checkpoint at " << run.last << "; starting from epoch 0\n";
    return;
  }
  auto* trainer = run.trainer.get();
  auto qat = run.qat;
  run.resumed = detail::resume(run.last, id, *run.trainer, *run.plans, [trainer, qat](int64_t next_epoch) {
    if (qat) qat->restore(*trainer, next_epoch);
  });
  run.comparison->restore(run.resumed.rows);
  // The scan taken before the first cut, back for the cuts still to come (allocation sensitivity).
  if (!run.stages.empty() && !run.comparison->sensitivity().is_null()) {
    run.stages.front().pruner->set_sensitivity(
        std::make_shared<prune::Sensitivity>(prune::Sensitivity::from_json(run.comparison->sensitivity().dump())));
  }
  if (run.options.print) {
    std::cout << "resuming " << run.last << " after epoch " << run.resumed.start_epoch << " (" << run.plans->size()
              << " cuts replayed)\n";
  }
}

RunResult finish(Run& run, std::chrono::steady_clock::time_point started) {
  RunResult result;
  result.output_dir = run.output_dir;
  run.comparison->finish();  // evaluations: every rank takes part
  if (run.group) {
    run.group->barrier("the end of the comparison");
    if (run.group->rank() != 0) {  // rank 0 writes the results
      result.completed = true;
      return result;
    }
  }
  if (const auto int8 = run.comparison->final_int8()) {
    // The deploy file: int8 weights, scales and zero points, float biases (torch.load reads it).
    io::write_state_dict(quant::int8_state_dict(*int8), (fs::path(run.output_dir) / "model_int8.pt").string());
  }
  if (const auto bert = std::dynamic_pointer_cast<models::BertForSequenceClassificationImpl>(run.model)) {
    // The fine-tuned (pruned) model in Hugging Face's form: config.json with pruned_heads.
    const auto hf = (fs::path(run.output_dir) / "hf").string();
    try {
      const auto c = models::save_pretrained(*bert, hf, *run.plans);
      if (run.options.print) {
        std::cout << "Hugging Face export: " << hf
                  << (c.intermediate_sizes().empty() ? " (from_pretrained loads it)\n"
                                                     : " (feed-forward widths differ by layer: models::load_pretrained "
                                                       "loads it, transformers cannot)\n");
      }
    } catch (const c10::Error& e) {
      std::error_code ec;
      fs::remove_all(hf, ec);  // an earlier run's export must not pass for this one's
      if (run.options.print) std::cout << "no Hugging Face export: " << io::error_text(e) << "\n";
    }
  }
  report::detail::RunInfo info;
  info.recipe = run.recipe.name;
  info.model = run.recipe.model.name();
  info.cuts = static_cast<int64_t>(run.plans->size());
  info.epochs = run.recipe.training.epochs();
  info.cpu = run.trainer->device().is_cpu();
  info.quantization = options::name_of(run.recipe.quantization.mode());
  info.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  auto summary = report::detail::summary(info, *run.comparison, run.recipe.report);
  std::string chosen_note;
  const auto chosen = fs::path(run.output_dir) / "chosen.pt";
  std::error_code stale;
  fs::remove(chosen, stale);  // an earlier run's choice must not pass for this one's
  if (summary.contains("goal") && !summary["goal"]["chosen"].is_null()) {
    // The chosen model, ready to deploy (int8 rows in the deploy file's form).
    bool saved = false;
    try {
      saved = report::detail::save_chosen(*run.comparison, summary["goal"]["chosen"], chosen.string());
      chosen_note = saved ? "chosen model: " + chosen.string()
                          : "the chosen row's weights were not kept by this run (an accuracy-only PTQ row, or a row "
                            "from before a resume): rerun with that configuration to get its file";
    } catch (const c10::Error& e) {  // the run's results still get their summary
      chosen_note = "the chosen model could not be saved: " + io::error_text(e);
    }
    summary["goal"]["file"] = saved ? json("chosen.pt") : json(nullptr);
  }
  run.comparison->release_models();
  result.summary_json = summary.dump(2);
  const std::string path = (fs::path(run.output_dir) / "summary.json").string();
  io::write_file_atomic(path, std::vector<char>(result.summary_json.begin(), result.summary_json.end()), "summary");
  result.completed = true;
  if (run.options.print) {
    report::detail::print_table(info, *run.comparison, run.recipe.report, summary.value("goal", json()), path);
    if (!chosen_note.empty()) std::cout << chosen_note << "\n";
    std::cout << "report page: python3 -m libprune.report " << run.output_dir
              << " (or bindings/libprune/report.py) writes report.html there" << std::endl;
  }
  return result;
}

}  // namespace

RunResult run(const std::string& recipe_path, const RunOptions& options) {
  const Recipe recipe = read(recipe_path, options.sets);
  const auto started = std::chrono::steady_clock::now();
  Run run{recipe, options};
  const auto env = dist::launch_env();
  if (env.distributed()) {
    run.group = std::make_shared<dist::ProcessGroup>(
        env, std::chrono::milliseconds(static_cast<int64_t>(recipe.training.dist_timeout_s() * 1000)));
    if (env.rank != 0) run.options.print = false;
    if (run.options.print) {
      std::cout << "data-parallel: " << env.world_size << " processes (Gloo), global batch "
                << recipe.training.batch_size() << ", " << recipe.training.batch_size() / env.world_size
                << " per process" << std::endl;
    }
  }
  run.output_dir = recipe.output_dir;
  run.last = (fs::path(run.output_dir) / "last.ckpt").string();
  std::error_code ec;
  fs::create_directories(run.output_dir, ec);
  TORCH_CHECK_VALUE(fs::is_directory(run.output_dir), "cannot create output_dir '", run.output_dir,
                    "'. Fix: --set output_dir=<a writable folder>");
  build(run);
  const std::string id = id_of(recipe.json);
  resume_if_asked(run, id);
  if (run.group) {
    // The others built their data after rank 0 and may still be loading: rank 0 waits for each as
    // long as it beats, before the first collective.
    if (run.group->rank() != 0) {
      run.group->announce("built/" + std::to_string(run.group->rank()));
    } else {
      for (int64_t r = 1; r < run.group->world_size(); ++r) {
        run.group->await("built/" + std::to_string(r), "rank " + std::to_string(r) + " to build its data and model", r);
      }
    }
    run.trainer->distribute(run.group);
  }
  add_callbacks(run, id);
  if (!run.trainer->fit(run.resumed.start_epoch)) {
    if (run.options.print) {
      std::cout << "\nstopped: the last checkpoint (" << run.last << ") holds the last completed epoch; continue with --resume\n";
    }
    RunResult stopped;
    stopped.output_dir = run.output_dir;
    return stopped;
  }
  return finish(run, started);
}

}  // namespace libprune::recipe
