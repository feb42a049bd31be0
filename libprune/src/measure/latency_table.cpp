#include "libprune/measure/latency_table.h"

#include "libprune/measure/latency.h"
#include "libprune/nn/eval_mode.h"

#include <torch/version.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

namespace libprune::measure {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// "model name" and the vector extensions that change which kernels run, from /proc/cpuinfo.
std::pair<std::string, std::string> cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "unknown", isa;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const auto value = colon + 2 <= line.size() ? line.substr(colon + 2) : std::string();
    if (key == "model name" && model == "unknown") model = value;
    if (key == "flags" && flags.empty()) {
      std::istringstream words(value);
      for (std::string w; words >> w;) flags.insert(w);
    }
  }
  for (const char* f : {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"}) {
    if (flags.count(f)) isa += std::string(isa.empty() ? "" : " ") + f;
  }
  return {model, isa.empty() ? "none" : isa};
}

std::string cache_dir(const LatencyTableOptions& o) {
  if (!o.cache_dir().empty()) return o.cache_dir() == "none" ? std::string() : o.cache_dir();
  if (const char* d = std::getenv("LIBPRUNE_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/libprune";
  if (const char* d = std::getenv("HOME"); d && *d) return std::string(d) + "/.cache/libprune";
  return {};
}

json key_json(const MachineKey& k) {
  return {{"cpu", k.cpu}, {"isa", k.isa}, {"torch", k.torch}, {"layout", k.layout}, {"precision", k.precision},
          {"threads", k.threads}};
}

// 2: entries are the fastest call (1: the median).
constexpr int kCacheFormat = 2;

// The cached grids of this machine from `file`; none (with a note on stderr) when the file is
// unreadable, of another format or holds another machine's times.
json read_cache(const std::string& file, const MachineKey& machine) {
  if (file.empty() || !fs::exists(file)) return json::object();
  try {
    std::ifstream in(file);
    const json cached = json::parse(in);
    if (cached.value("format", 0) != kCacheFormat) {
      std::cerr << "libprune: latency cache " << file << " is of an older format; measuring again and replacing it"
                << std::endl;
      return json::object();
    }
    MachineKey theirs;
    const auto& m = cached.at("machine");
    theirs.cpu = m.at("cpu").get<std::string>();
    theirs.isa = m.at("isa").get<std::string>();
    theirs.torch = m.at("torch").get<std::string>();
    theirs.layout = m.at("layout").get<std::string>();
    theirs.precision = m.at("precision").get<std::string>();
    theirs.threads = m.at("threads").get<int>();
    const auto diff = machine.difference(theirs);
    if (!diff.empty()) {
      std::cerr << "libprune: latency cache " << file << " was measured elsewhere (" << diff
                << "); measuring again and replacing it" << std::endl;
      return json::object();
    }
    return cached.at("ops");
  } catch (const std::exception& e) {
    std::cerr << "libprune: latency cache " << file << " is unreadable (" << e.what()
              << "); measuring again and replacing it" << std::endl;
    return json::object();
  }
}

void write_cache(const std::string& file, const MachineKey& machine, const json& ops) {
  if (file.empty()) return;
  std::error_code ec;
  fs::create_directories(fs::path(file).parent_path(), ec);
  const std::string tmp = file + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    out << json{{"format", kCacheFormat}, {"machine", key_json(machine)}, {"ops", ops}}.dump(1);
    if (!out) {
      std::cerr << "libprune: could not write the latency cache " << file << "; the table is not kept" << std::endl;
      return;
    }
  }
  fs::rename(tmp, file, ec);
  if (ec) std::cerr << "libprune: could not write the latency cache " << file << " (" << ec.message() << ")" << std::endl;
}

// Linear interpolation position of `x` among sorted `xs`: index of the lower sample and weight of the upper.
std::pair<size_t, double> locate(const std::vector<int64_t>& xs, int64_t x) {
  if (xs.size() == 1 || x <= xs.front()) return {0, 0.0};
  if (x >= xs.back()) return {xs.size() - 2, 1.0};
  const size_t hi = static_cast<size_t>(std::upper_bound(xs.begin(), xs.end(), x) - xs.begin());
  const double t = static_cast<double>(x - xs[hi - 1]) / static_cast<double>(xs[hi] - xs[hi - 1]);
  return {hi - 1, t};
}

}  // namespace

MachineKey MachineKey::current(const LatencyTableOptions& options) {
  MachineKey k;
  std::tie(k.cpu, k.isa) = cpu_description();
  k.torch = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
            std::to_string(TORCH_VERSION_PATCH) + (at::hasMKLDNN() ? " onednn" : "");
  k.layout = options.channels_last() ? "channels_last" : "contiguous";
  k.threads = options.threads() > 0 ? options.threads() : torch::get_num_threads();
  return k;
}

std::string MachineKey::difference(const MachineKey& o) const {
  const std::pair<const char*, std::pair<std::string, std::string>> fields[] = {
      {"cpu", {cpu, o.cpu}},       {"isa", {isa, o.isa}},       {"LibTorch", {torch, o.torch}},
      {"layout", {layout, o.layout}}, {"precision", {precision, o.precision}},
      {"threads", {std::to_string(threads), std::to_string(o.threads)}}};
  for (const auto& [name, values] : fields) {
    if (values.first != values.second) return std::string(name) + " " + values.second + ", here " + values.first;
  }
  return {};
}

std::string MachineKey::to_string() const {
  return cpu + " (" + isa + "), LibTorch " + torch + ", " + std::to_string(threads) + " threads, " + layout + ", " + precision;
}

std::vector<int64_t> LatencyTable::sample_widths(int64_t full) {
  TORCH_CHECK_VALUE(full >= 1, "latency table: a layer has ", full, " channels");
  const int64_t step = full <= 16 ? 4 : full <= 64 ? 8 : full <= 256 ? 16 : (full / 16 + 15) / 16 * 16;
  std::vector<int64_t> w;
  for (int64_t x = step; x < full; x += step) w.push_back(x);
  w.push_back(full);
  return w;
}

LatencyTable LatencyTable::build(const graph::Trace& trace, double dense_ms, const LatencyTableOptions& options) {
  TORCH_CHECK_VALUE(dense_ms > 0, "latency table: the dense model's latency must be positive, got ", dense_ms, " ms");
  TORCH_CHECK_VALUE(options.runs() >= 1 && options.warmup() >= 0, "latency table: runs must be >= 1 and warmup >= 0");
  const auto t0 = std::chrono::steady_clock::now();
  LatencyTable t;
  t.sites_ = op_sites(trace);
  TORCH_CHECK_VALUE(!t.sites_.empty(), "latency table: the model has no conv or linear layer to time. Fix: pass a model "
                                       "with conv or linear layers (a latency target needs them)");
  t.machine_ = MachineKey::current(options);
  t.dense_ms_ = dense_ms;
  const auto dir = cache_dir(options);
  if (!dir.empty()) t.cache_file_ = dir + "/latency-" + std::to_string(t.machine_.threads) + "t-" + t.machine_.layout + ".json";
  json ops = read_cache(t.cache_file_, t.machine_);
  const auto timing = LatencyOptions().warmup(options.warmup()).runs(options.runs()).threads(t.machine_.threads);
  // Each entry is the fastest of its calls: whatever else runs on the machine only adds time, and a
  // burst of it (another tenant, a descheduled thread) must not become a layer's cost.
  const auto measure_grid = [&](const OpSite& site, Grid& g) {
    std::vector<double> fresh;
    for (int64_t in : g.in) {
      for (int64_t out : g.out) {
        // Fresh tensors per shape: oneDNN caches per shape, and each entry must see the cold cost once.
        fresh.push_back(time_calls(site.runner(in, out, options.channels_last()), timing).min_ms);
      }
    }
    for (size_t k = 0; k < g.ms.size() && k < fresh.size(); ++k) fresh[k] = std::min(fresh[k], g.ms[k]);
    g.ms = std::move(fresh);
    t.measured_ += static_cast<int64_t>(g.ms.size());
    ops[site.shape_key()] = {{"in", g.in}, {"out", g.out}, {"ms", g.ms}};
  };
  // An entry of the cache (or of this build) with the site's shape and widths, else timed now.
  const auto fill = [&](const OpSite& site, Grid& g, bool reuse) {
    const auto key = site.shape_key();
    if (reuse && ops.contains(key) && ops[key].value("in", std::vector<int64_t>{}) == g.in &&
        ops[key].value("out", std::vector<int64_t>{}) == g.out) {
      g.ms = ops[key].at("ms").get<std::vector<double>>();
      t.reused_ += static_cast<int64_t>(g.ms.size());
    } else {
      measure_grid(site, g);
    }
  };
  for (const auto& site : t.sites_) {
    Grid g;
    g.in = site.layer() && site.resizable() && !site.depthwise() ? sample_widths(site.in_channels())
                                                                  : std::vector<int64_t>{site.in_channels()};
    g.out = site.resizable() ? sample_widths(site.out_channels()) : std::vector<int64_t>{site.out_channels()};
    fill(site, g, true);
    t.grids_.push_back(std::move(g));
  }
  const auto sites_ms = [&] {
    double sum = 0;
    for (size_t i = 0; i < t.sites_.size(); ++i) sum += t.op_ms(i, t.sites_[i].in_channels(), t.sites_[i].out_channels());
    return sum;
  };
  // The layers alone cannot take much longer than the whole model: when they do, some entries (or
  // the cache they came from) were timed on a busy machine. Time every shape again, keep the
  // faster of the two, and give up, keeping nothing, when that does not mend it.
  constexpr double kSlack = 1.15;
  if (sites_ms() > kSlack * dense_ms) {
    std::cerr << "libprune: latency table: the layers timed alone add up to " << sites_ms() << " ms, more than the "
              << "whole model's " << dense_ms << " ms; timing every layer again" << std::endl;
    t.reused_ = 0;
    std::set<std::string> retimed;  // sites of one shape share an entry: time it once
    for (size_t i = 0; i < t.sites_.size(); ++i) {
      fill(t.sites_[i], t.grids_[i], !retimed.insert(t.sites_[i].shape_key()).second);
    }
  }
  const double ops_ms = sites_ms();
  TORCH_CHECK(ops_ms <= kSlack * dense_ms, "latency table: the layers timed alone add up to ", ops_ms,
              " ms, more than the whole model's ", dense_ms, " ms, twice: the machine was too busy to time ",
              "them at ", t.machine_.threads, " threads. Nothing was cached. Fix: build the table when the machine ",
              "is quiet, with no more threads than free cores (latency threads), or raise runs");
  if (t.measured_ > 0) write_cache(t.cache_file_, t.machine_, ops);
  std::vector<std::pair<int64_t, int64_t>> full;
  for (const auto& site : t.sites_) full.emplace_back(site.in_channels(), site.out_channels());
  t.dense_elements_ = t.output_elements(full);
  t.rest_ms_ = dense_ms - ops_ms;
  t.seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return t;
}

LatencyTable LatencyTable::build(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                                 const nn::Inputs& inputs, const LatencyTableOptions& options) {
  const auto trace = graph::Trace::capture(module, [&] { return std::vector<torch::Tensor>{forward(inputs)}; },
                                           inputs.describe());
  return build(trace, deployed_ms(module, forward, inputs, options), options);
}

double deployed_ms(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                   const nn::Inputs& inputs, const LatencyTableOptions& options) {
  const bool images = std::any_of(inputs.items().begin(), inputs.items().end(),
                                  [](const auto& kv) { return kv.second.dim() == 4 && kv.second.is_floating_point(); });
  return measure_latency(module, forward, inputs,
                         LatencyOptions()
                             .threads(options.threads())
                             .channels_last(options.channels_last() && images)
                             .fold_batchnorm(true)
                             .runs(20)
                             .warmup(5))
      .median_ms;
}

double latency_ratio(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                     torch::nn::Module& reference, const std::function<torch::Tensor(const nn::Inputs&)>& reference_forward,
                     const nn::Inputs& inputs, const LatencyTableOptions& options) {
  double ms = 0, reference_ms = 0;
  for (int round = 0; round < 2; ++round) {
    reference_ms += deployed_ms(reference, reference_forward, inputs, options);
    ms += deployed_ms(module, forward, inputs, options);
  }
  TORCH_CHECK(reference_ms > 0, "latency_ratio: the reference model measured 0 ms");
  return ms / reference_ms;
}

int LatencyTable::site_of(const std::string& name) const {
  for (size_t i = 0; i < sites_.size(); ++i) {
    if (sites_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

double LatencyTable::op_ms(size_t site, int64_t in, int64_t out) const {
  const auto& g = grids_.at(site);
  const auto [i, ti] = locate(g.in, in);
  const auto [o, to] = locate(g.out, out);
  const size_t cols = g.out.size();
  const auto at = [&](size_t a, size_t b) {
    return g.ms[std::min(a, g.in.size() - 1) * cols + std::min(b, cols - 1)];
  };
  const double lo = at(i, o) * (1 - to) + at(i, o + 1) * to;
  const double hi = at(i + 1, o) * (1 - to) + at(i + 1, o + 1) * to;
  return lo * (1 - ti) + hi * ti;
}

double LatencyTable::output_elements(const std::vector<std::pair<int64_t, int64_t>>& widths) const {
  double e = 0;
  for (size_t i = 0; i < sites_.size(); ++i) {
    e += static_cast<double>(sites_[i].output_elements_per_channel()) * static_cast<double>(widths[i].second);
  }
  return e;
}

double LatencyTable::predict_ms(const std::vector<std::pair<int64_t, int64_t>>& widths) const {
  TORCH_CHECK_VALUE(widths.size() == sites_.size(), "latency table: ", widths.size(), " widths for ", sites_.size(),
                    " layers");
  double ms = 0;
  for (size_t i = 0; i < sites_.size(); ++i) {
    if (widths[i].second > 0) ms += op_ms(i, widths[i].first, widths[i].second);  // 0: a layer the model lost
  }
  return ms + rest_ms_ * output_elements(widths) / std::max(1.0, dense_elements_);
}

double LatencyTable::predict_ms(const graph::Trace& trace) const {
  std::vector<std::pair<int64_t, int64_t>> widths(sites_.size(), {0, 0});
  for (const auto& s : op_sites(trace)) {
    const int i = site_of(s.name);
    TORCH_CHECK_VALUE(i >= 0, "latency table: ", s.name, " is not in the table. Fix: build the table from this "
                              "model (or the dense model it was pruned from)");
    widths[static_cast<size_t>(i)] = {s.in_channels(), s.out_channels()};
  }
  return predict_ms(widths);
}

std::string LatencyTable::to_string() const {
  std::ostringstream s;
  s.precision(3);
  s << std::fixed << sites_.size() << " layers, dense " << dense_ms_ << " ms (layers " << dense_ms_ - rest_ms_
    << " ms, rest " << rest_ms_ << " ms), " << measured_ << " entries measured, " << reused_ << " reused, "
    << seconds_ << " s; " << machine_.to_string();
  return s.str();
}

}  // namespace libprune::measure
