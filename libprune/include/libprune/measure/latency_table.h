#pragma once
// Latency tables: each conv and linear layer of a model timed on its own at sampled input and
// output widths, on this machine, at the batch, thread count, layout and precision it will run
// with; and the latency model built on them:
//
//   predicted ms = sum over layers of table(layer, in width, out width)
//                + rest ms x (output elements of those layers now / dense)
//
// where rest = the whole dense model's measured latency minus its layers' table entries at full
// width (batch norms folded, activations, adds, pooling, the framework's per-op cost), taken to
// scale with the activations the layers write. Budgeted pruning (PrunerOptions::target) chooses
// widths with it; docs/design.md ("Latency budgets") says how it was validated.
//
//   auto table = LatencyTable::build(model, images_b32);   // minutes for a ResNet-50, once
//   pruner.set_latency_table(std::make_shared<LatencyTable>(table));
//
// Tables are cached in a file per thread count and layout under cache_dir, keyed inside by the
// CPU model, its ISA and the LibTorch version; a file from another machine or LibTorch is
// detected, rebuilt and overwritten, never used.
#include "libprune/measure/op_sites.h"
#include "libprune/nn/inputs.h"

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace libprune::measure {

struct LatencyTableOptions {
  LatencyTableOptions() = default;
  // Torch intra-op threads for the measurements; 0 keeps the current setting.
  TORCH_ARG(int, threads) = 0;
  // Convs run in channels_last (the fast layout on CPUs); the dense model is timed so too.
  TORCH_ARG(bool, channels_last) = true;
  TORCH_ARG(int, warmup) = 2;
  // Each entry is the fastest of this many calls.
  TORCH_ARG(int, runs) = 7;
  // Where tables are cached: "" means $LIBPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/libprune, else
  // ~/.cache/libprune; "none" keeps nothing.
  TORCH_ARG(std::string, cache_dir) = "";
};

// What a table's times hold for: they are reused only where every field matches.
struct MachineKey {
  std::string cpu, isa, torch, layout, precision = "fp32";
  int threads = 0;
  static MachineKey current(const LatencyTableOptions& options);
  // "" when equal, else the first field that differs with both values.
  std::string difference(const MachineKey& other) const;
  std::string to_string() const;
};

// The model's latency as a table's dense time is measured: eval mode, batch norms folded, the
// options' threads, channels_last for image inputs when the options ask; median of 20 calls.
double deployed_ms(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                   const nn::Inputs& inputs, const LatencyTableOptions& options = {});

// deployed_ms(module) / deployed_ms(reference), the two timed side by side (interleaved, twice
// each), so that a machine busier or quieter than when a table was built moves both alike.
// Multiplied by the table's dense_ms() it gives the module's latency in the table's terms, which a
// budget's calibration compares with the table's prediction. `reference` is a model of the dense
// shape (its weights do not matter).
double latency_ratio(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                     torch::nn::Module& reference, const std::function<torch::Tensor(const nn::Inputs&)>& reference_forward,
                     const nn::Inputs& inputs, const LatencyTableOptions& options = {});

class LatencyTable {
 public:
  // Times every op_sites(trace) layer at its sampled widths (reusing cached entries). `trace` is a
  // forward at the deployment batch; `dense_ms` the whole model's measured latency at that batch.
  static LatencyTable build(const graph::Trace& trace, double dense_ms, const LatencyTableOptions& options = {});
  // Traces forward(inputs) and measures the model itself (eval mode, batch norms folded, the
  // options' layout and threads), then builds the table. The model is unchanged afterwards.
  static LatencyTable build(torch::nn::Module& module, const std::function<torch::Tensor(const nn::Inputs&)>& forward,
                            const nn::Inputs& inputs, const LatencyTableOptions& options = {});
  template <typename ModuleLike>
  static LatencyTable build(ModuleLike& model, const torch::Tensor& input, const LatencyTableOptions& options = {}) {
    return build(*model, [&model](const nn::Inputs& in) { return model->forward(in.single()); },
                 nn::Inputs{{"input", input}}, options);
  }

  // The widths sampled for a dimension of `full` channels: multiples of a step (4 up to 16
  // channels, 8 up to 64, 16 up to 256, then full/16 rounded up to 16) and `full` itself.
  static std::vector<int64_t> sample_widths(int64_t full);

  const std::vector<OpSite>& sites() const { return sites_; }
  // The index of the site with this name (OpSite::name) in sites(), or -1.
  int site_of(const std::string& name) const;
  // A layer's time at widths (in, out): exact at sampled widths, bilinear between them, clamped to
  // the sampled range. A depthwise layer's `in` is ignored.
  double op_ms(size_t site, int64_t in, int64_t out) const;
  // The latency model at widths[i] = (in, out) of sites()[i].
  double predict_ms(const std::vector<std::pair<int64_t, int64_t>>& widths) const;
  // The latency model for a model traced at the same batch (pruned from the one measured): its
  // layers are matched by weight name; a layer the table lacks is an error naming it.
  double predict_ms(const graph::Trace& trace) const;

  double dense_ms() const { return dense_ms_; }
  double rest_ms() const { return rest_ms_; }
  const MachineKey& machine() const { return machine_; }
  int64_t entries_measured() const { return measured_; }
  int64_t entries_reused() const { return reused_; }
  double seconds_to_build() const { return seconds_; }
  std::string cache_file() const { return cache_file_; }
  std::string to_string() const;

 private:
  struct Grid {
    std::vector<int64_t> in, out;
    std::vector<double> ms;  // [in][out]
  };
  double output_elements(const std::vector<std::pair<int64_t, int64_t>>& widths) const;

  std::vector<OpSite> sites_;
  std::vector<Grid> grids_;
  MachineKey machine_;
  double dense_ms_ = 0, rest_ms_ = 0, dense_elements_ = 0, seconds_ = 0;
  int64_t measured_ = 0, reused_ = 0;
  std::string cache_file_;
};

}  // namespace libprune::measure
