#include "comparison.h"

#include "libprune/layers/apply.h"
#include "libprune/measure/count_ops.h"
#include "libprune/measure/latency.h"
#include "libprune/nn/memory_format.h"
#include "libprune/train/qat_callback.h"

#include <algorithm>
#include <tuple>

namespace libprune::report::detail {
namespace {

// Every row a run can report, in the order they are shown.
const std::vector<std::pair<std::string, std::string>>& known_rows() {
  static const std::vector<std::pair<std::string, std::string>> rows{
      {"dense", "dense"},           {"pruned", "pruned"},
      {"int8", "int8"},             {"pruned_int8", "pruned+int8"},
      {"int8_ptq", "int8 (PTQ)"},   {"pruned_int8_ptq", "pruned+int8 (PTQ)"},
      {"lowbit", "int"},            {"pruned_lowbit", "pruned+int"}};  // + "<bits> (simulated QAT)"
  return rows;
}

// A confusion matrix (rows true, columns predicted) with its class names (indices when unnamed).
json confusion_json(const torch::Tensor& confusion, const std::vector<std::string>& names) {
  const auto c = confusion.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t n = c.size(0);
  json labels = json::array(), matrix = json::array();
  for (int64_t i = 0; i < n; ++i) {
    labels.push_back(i < static_cast<int64_t>(names.size()) ? names[static_cast<size_t>(i)] : std::to_string(i));
    const int64_t* row = c.data_ptr<int64_t>() + i * n;
    matrix.push_back(std::vector<int64_t>(row, row + n));
  }
  return {{"labels", labels}, {"matrix", matrix}, {"rows", "true label"}, {"columns", "prediction"}};
}

size_t order_of(const std::string& key) {
  const auto& rows = known_rows();
  return static_cast<size_t>(std::find_if(rows.begin(), rows.end(), [&](const auto& r) { return r.first == key; }) -
                             rows.begin());
}

// Keeps the smaller figure under `key`; true when `ms` is the new best.
bool keep_min(json& out, const std::string& key, double ms) {
  if (out.contains(key) && out[key].get<double>() <= ms) return false;
  out[key] = ms;
  return true;
}

void copy_state(torch::nn::Module& to, const torch::nn::Module& from) {
  torch::NoGradGuard no_grad;
  auto params = from.named_parameters(true);
  for (auto& p : to.named_parameters(true)) p.value().copy_(params[p.key()]);
  auto buffers = from.named_buffers(true);
  for (auto& b : to.named_buffers(true)) b.value().copy_(buffers[b.key()]);
}

}  // namespace

// Over the whole eval set: in a data-parallel run each rank holds the logits of its own batches
// (maybe none), so the counts and sums are added over the ranks.
void agreement(json& out, const torch::Tensor& reference, const torch::Tensor& int8, const std::string& against,
               const std::shared_ptr<dist::ProcessGroup>& group) {
  namespace F = torch::nn::functional;
  auto sums = torch::zeros({3}, torch::kDouble);  // agreeing argmaxes, cosine sum, examples
  if (reference.size(0) > 0) {
    sums[0] = reference.argmax(1).eq(int8.argmax(1)).sum().item<double>();
    sums[1] = F::cosine_similarity(reference, int8, F::CosineSimilarityFuncOptions().dim(1)).sum().item<double>();
    sums[2] = static_cast<double>(reference.size(0));
  }
  if (group) {
    std::vector<torch::Tensor> t{sums};
    group->allreduce_sum(t, "the int8 agreement counts");
  }
  const double n = std::max(1.0, sums[2].item<double>());
  out["argmax_agreement_with_" + against] = 100.0 * sums[0].item<double>() / n;
  out["logit_cosine_with_" + against] = sums[1].item<double>() / n;
}

Comparison::Comparison(train::Trainer& trainer, std::function<models::ModelPtr()> build, ReportOptions options,
                       std::shared_ptr<const train::PlanHistory> plans, bool prunes, QuantPlan quant)
    : trainer_(trainer), build_(std::move(build)), options_(std::move(options)), plans_(std::move(plans)),
      prunes_(prunes), quant_(std::move(quant)) {}

Row& Comparison::row(const std::string& key) {
  for (auto& r : rows_) {
    if (r.key == key) return r;
  }
  rows_.push_back({key, "", json::object(), nullptr});  // labelled in finish()
  std::stable_sort(rows_.begin(), rows_.end(), [](const Row& a, const Row& b) { return order_of(a.key) < order_of(b.key); });
  for (auto& r : rows_) {
    if (r.key == key) return r;
  }
  return rows_.back();
}

bool Comparison::has(const std::string& key) const {
  return std::any_of(rows_.begin(), rows_.end(), [&](const Row& r) { return r.key == key && !r.figures.empty(); });
}

const json& Comparison::figures(const std::string& key) const {
  static const json none = json::object();
  for (const auto& r : rows_) {
    if (r.key == key) return r.figures;
  }
  return none;
}

std::string Comparison::final_key() const { return prunes_ ? "pruned_int8" : "int8"; }

graph::Forward Comparison::example_forward(const models::ModelPtr& model) {
  auto example = trainer_.example(1);
  return [model, example] { return std::vector<torch::Tensor>{model->forward_inputs(example)}; };
}

json Comparison::measure(const models::ModelPtr& model, const std::string& float_key, const Evaluated* done) {
  const bool own = model == trainer_.model() && !trainer_.history().empty() && float_key.empty();
  const train::Evaluation e =
      done  ? done->figures
      : own ? trainer_.last_evaluation()
            : trainer_.evaluate(*model, [model](const nn::Inputs& x) { return model->forward_inputs(x); });
  json out{{"accuracy", e.top1}, {"top5", e.top5}, {"macro_f1", e.macro_f1}};
  if (e.confusion.defined()) out["confusion"] = confusion_json(e.confusion, trainer_.eval_data()->class_names());
  if (float_key.empty()) {
    const auto c = measure::count_ops(model, trainer_.example(1));
    out["params"] = c.params;
    out["macs"] = c.macs;
    out["size_bytes"] = static_cast<int64_t>(io::serialize_state_dict(io::state_dict(*model)).size());
  } else {
    const json& f = figures(float_key);
    out["params"] = f.value("params", int64_t{0});
    out["macs"] = f.value("macs", int64_t{0});
    out["size_bytes"] = static_cast<int64_t>(io::serialize_state_dict(quant::int8_state_dict(*model)).size());
  }
  return out;
}

Comparison::Evaluated Comparison::evaluate(const models::ModelPtr& model) {
  std::vector<torch::Tensor> out;
  Evaluated e;
  e.figures = trainer_.evaluate(*model, [&](const nn::Inputs& x) {
    out.push_back(model->forward_inputs(x).to(torch::kCPU, torch::kDouble));  // exact: argmax and top-5 unchanged
    return out.back();
  });
  e.logits = out.empty() ? torch::zeros({0, 0}, torch::kDouble) : torch::cat(out);  // a rank may get no batch
  return e;
}

models::ModelPtr Comparison::copy(const models::ModelPtr& from, bool with_plans) {
  auto net = build_();
  if (with_plans) {
    for (const auto& plan : *plans_) layers::apply_plan(*net, plan);
  }
  net->to(trainer_.device());
  copy_state(*net, *from);
  const bool channels_last = trainer_.options().channels_last() && trainer_.device().is_cpu();
  if (channels_last) nn::to_memory_format(*net, torch::MemoryFormat::ChannelsLast);
  return net;
}

void Comparison::ptq_row(const models::ModelPtr& from, bool with_plans, const std::string& key,
                         const std::string& float_key, bool timed) {
  auto net = copy(from, with_plans);
  const auto reference = evaluate(net).logits;
  const auto forward = example_forward(net);
  // Calibration observes only (min-max or percentile ranges of what it sees), then the ranges convert.
  auto options = quant::QuantOptions(quant_.options).observer(quant_.calibration_observer);
  if (key == final_key() && quant_.keep_float_worst > 0) options.keep_float(with_worst_units(options.keep_float()));
  quant::prepare(*net, forward, options);
  quant::calibration_mode(*net);
  trainer_.calibrate([net](const nn::Inputs& x) { return net->forward_inputs(x); }, quant_.calibration_batches);
  quant::convert(*net, forward, quant::ConvertOptions().engine(quant_.engine));
  auto& r = row(key);
  const auto int8 = evaluate(net);
  r.figures = measure(net, float_key, &int8);
  if (!options.keep_float().empty()) r.figures["kept_float"] = options.keep_float();
  agreement(r.figures, reference, int8.logits, "float", trainer_.process_group());
  r.model = timed ? net : nullptr;
}

// The QAT model's float weights trained on at simulate_bits (fake-quantised from a fresh observation)
// for simulate_epochs (the LR schedule again, from the LR the run's QAT started with), evaluated fake-quantised: what the
// same pipeline would reach at fewer bits, where no int8 kernel runs.
void Comparison::simulated_row(const std::string& float_key) {
  auto net = copy(trainer_.model(), true);
  auto options = trainer_.options();
  options.epochs(quant_.simulate_epochs).progress(false).restarts(train::Epochs{}).warmup_epochs(0.0);
  options.lr(trainer_.lr_at(static_cast<double>(quant_.qat_start_epoch)));
  train::Trainer simulated(net, trainer_.train_data(), trainer_.eval_data(), options);
  auto qat = std::make_shared<train::QatCallback>(quant::QuantOptions(quant_.options).bits(quant_.simulate_bits),
                                                  train::QatSchedule(), example_forward(net));
  qat->verbose = false;
  simulated.add_callback(qat);
  simulated.fit();
  auto& r = row(prunes_ ? "pruned_lowbit" : "lowbit");
  const json& f = figures(float_key);
  r.figures = {{"accuracy", simulated.history().back().top1}, {"top5", simulated.history().back().top5},
               {"macro_f1", simulated.history().back().macro_f1},
               {"bits", quant_.simulate_bits}, {"epochs", quant_.simulate_epochs},
               {"params", f.value("params", int64_t{0})}, {"macs", f.value("macs", int64_t{0})}};
}

void Comparison::record_dense() {
  if (has("dense")) return;
  const auto model = copy(trainer_.model(), true);
  auto figures = measure(trainer_.model());
  row("dense").figures = std::move(figures);
  row("dense").model = model;
  if (quant_.mode == QuantPlan::Mode::none || !quant_.compare) return;
  if (prunes_) {
    ptq_row(model, false, "int8", "dense", true);
  } else if (quant_.mode == QuantPlan::Mode::qat) {
    ptq_row(model, false, "int8_ptq", "dense", false);
  }
}

void Comparison::record_pruned() {
  // Without cuts a quantizing run has no pruned row; a plain run reports its final model as one.
  if (has("pruned") || (!prunes_ && quant_.mode != QuantPlan::Mode::none)) return;
  const auto model = copy(trainer_.model(), true);
  auto figures = measure(trainer_.model());
  row("pruned").figures = std::move(figures);
  row("pruned").model = model;
  if (quant_.mode == QuantPlan::Mode::qat && quant_.compare) ptq_row(model, true, "pruned_int8_ptq", "pruned", false);
}

json Comparison::saved() const {
  json out = json::object();
  for (const auto& r : rows_) out[r.key] = r.figures;
  if (!sensitivity_.is_null()) out["sensitivity"] = sensitivity_;
  if (!quant_sensitivity_.is_null()) out["quant_sensitivity"] = quant_sensitivity_;
  return out;
}

void Comparison::restore(const json& saved) {
  for (const auto& known : known_rows()) {
    if (saved.contains(known.first)) row(known.first).figures = saved[known.first];
  }
  if (saved.contains("sensitivity")) sensitivity_ = saved["sensitivity"];
  // A scan of other widths or eval batches (the report section may change on resume) is not this run's.
  if (saved.contains("quant_sensitivity") && saved["quant_sensitivity"].value("bits", json()) == json(options_.quant_sensitivity_bits()) &&
      saved["quant_sensitivity"].value("eval_batches", json()) == json(options_.sensitivity_batches()) &&
      saved["quant_sensitivity"].value("metric", std::string("top1")) == options::name_of(options_.quant_sensitivity_metric())) {
    quant_sensitivity_ = saved["quant_sensitivity"];
  }
}

void Comparison::finish() {
  record_dense();
  scan_quantization();  // QAT's ran before it prepared, unless a resume came after that
  if (quant_.mode == QuantPlan::Mode::none || prunes_) record_pruned();
  const std::string float_key = prunes_ ? "pruned" : "dense";
  if (quant_.mode == QuantPlan::Mode::ptq) ptq_row(trainer_.model(), true, final_key(), float_key, true);
  if (quant_.mode == QuantPlan::Mode::qat) {
    if (quant_.simulate_bits > 0) simulated_row(float_key);
    auto model = trainer_.model();
    const auto simulated = evaluate(model).logits;
    quant::convert(*model, example_forward(model), quant::ConvertOptions().engine(quant_.engine));
    auto& r = row(final_key());
    const auto int8 = evaluate(model);
    r.figures = measure(model, float_key, &int8);
    if (!quant_.options.keep_float().empty()) r.figures["kept_float"] = quant_.options.keep_float();
    agreement(r.figures, simulated, int8.logits, "qat", trainer_.process_group());  // the int8 kernels against what QAT simulated
    r.model = model;
  }
  // Rows restored from a checkpoint have figures, not weights: their architecture is timed.
  for (auto& r : rows_) {
    if (r.model || r.key.find("_ptq") != std::string::npos || r.key.find("lowbit") != std::string::npos) continue;
    if (r.key == "dense") r.model = build_();
    if (r.key == "pruned") r.model = copy(trainer_.model(), true);
    if (r.key == "int8") {
      const json figures = r.figures;
      ptq_row(build_(), false, "int8", "dense", true);
      r.figures = figures;
    }
    r.architecture_only = r.model != nullptr;
    if (r.model) r.model->to(trainer_.device());
  }
  // Interleaved rounds, the best of each: every row sees the same machine state.
  for (auto& r : rows_) {
    for (auto it = r.figures.begin(); it != r.figures.end();) {
      it = it.key().rfind("latency_", 0) == 0 ? r.figures.erase(it) : std::next(it);
    }
  }
  for (int round = 0; round < 3; ++round) {
    for (auto& r : rows_) {
      if (r.model) time(r.model, r.figures);
    }
  }
  for (auto& r : rows_) {
    if (r.key == final_key() && quant_.mode != QuantPlan::Mode::none) final_int8_ = r.model;
    r.label = known_rows()[order_of(r.key)].second;
    if (r.key.find("lowbit") != std::string::npos) r.label += std::to_string(quant_.simulate_bits) + " (simulated QAT)";
    if (r.key == final_key() && quant_.mode == QuantPlan::Mode::qat) r.label += " (QAT)";
    if (r.key == "int8" && prunes_ && quant_.mode != QuantPlan::Mode::none) r.label += " (PTQ)";
    if (r.key == final_key() && quant_.mode == QuantPlan::Mode::ptq) r.label += " (PTQ)";
  }
}

void Comparison::release_models() {
  for (auto& r : rows_) r.model.reset();
}

// Text inputs at `tokens` tokens per example: each row's ids repeated to that length, every token
// attended (0 keeps the data's own lengths). Other inputs pass unchanged.
static nn::Inputs timed_inputs(const nn::Inputs& inputs, int64_t tokens) {
  if (tokens <= 0 || !inputs.has("input_ids")) return inputs;
  const auto& ids = inputs.at("input_ids");
  const int64_t have = ids.size(1);
  const auto repeated = ids.repeat({1, (tokens + have - 1) / have}).narrow(1, 0, tokens).contiguous();
  nn::Inputs out;
  for (const auto& [name, t] : inputs.items()) {
    if (name == "input_ids") out.set(name, repeated);
    else if (t.dim() == 2 && t.size(1) == have) out.set(name, name == "attention_mask" ? torch::ones_like(repeated) : torch::zeros_like(repeated));
    else out.set(name, t);
  }
  return out;
}

// Latency of `net` per batch size, as it would be deployed: on CPU both memory formats are timed
// (thin pruned layers can favour NCHW) and, with latency_threads 0, fewer threads than the
// training's too (small batches often run faster on fewer). The fastest is kept, and named. An int8
// model is timed on fresh packs per shape and thread count (measure_latency repacks it).
void Comparison::time(const models::ModelPtr& net, json& out) {
  const bool cpu = trainer_.device().is_cpu();
  const int threads = options_.latency_threads();
  for (const int64_t batch : options_.latency_batches()) {
    const std::string key = "latency_ms_b" + std::to_string(batch);
    const auto example = timed_inputs(trainer_.example(batch), options_.latency_tokens());
    bool images = false;  // channels_last is a layout of images only
    for (const auto& [name, t] : example.items()) images = images || (t.dim() == 4 && t.is_floating_point());
    for (const bool cl : cpu && images ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
      const char* format = cl ? "channels_last" : "nchw";
      const auto memory = cl ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
      nn::to_memory_format(*net, memory);
      const auto inputs = example.map([memory](const torch::Tensor& t) {
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

}  // namespace libprune::report::detail
