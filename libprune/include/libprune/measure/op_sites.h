#pragma once
// The convolutions and linear layers of one traced forward, and the activations and residual adds
// on their outputs, as operators that can be costed and timed on their own at other widths: what
// latency tables (measure/latency_table.h) and budgeted pruning (PrunerOptions::target) cost a cut
// with.
#include "libprune/graph/trace.h"

#include <functional>
#include <string>
#include <vector>

namespace libprune::measure {

struct OpSite {
  // What the site is called in tables: the weight for a layer, "<weight>:<kind>.<k>" for the k-th
  // activation or add on that layer's outputs.
  std::string name;
  // The weight parameter ("layer1.0.conv1.weight"); for an activation or add, the weight of the
  // layer whose output channels it carries (its width follows that layer's output width).
  std::string weight;
  // "conv" or "linear"; "relu", "hardtanh" or "add" (in place, as torchvision and the zoo run them).
  std::string kind;
  graph::Shape input;         // the input's shape in the traced pass ([N, C, H, W]; [..., in] for linear)
  graph::Shape weight_shape;  // [out, in / groups, kh, kw]; [out, in] for linear; empty for an activation
  graph::Shape output;        // the output's shape in the traced pass
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;

  bool layer() const { return kind == "conv" || kind == "linear"; }
  int64_t in_channels() const;
  int64_t out_channels() const;
  // A depthwise conv (groups == in == out channels): its input width follows its output width.
  bool depthwise() const { return kind == "conv" && groups > 1 && groups == in_channels() && groups == out_channels(); }
  // Whether its widths may change: plain and depthwise convs and linear layers (other grouped
  // convs keep their widths in the cost models).
  bool resizable() const { return !layer() || groups == 1 || depthwise(); }
  // Everything its time depends on but the two widths, and its full widths: the cache key of its
  // measurements ("conv k3x3 s1 p1 d1 in[32,16,28,28] 16->16").
  std::string shape_key() const;
  // Output elements per output channel (N x H_out x W_out; the rows M for linear).
  int64_t output_elements_per_channel() const;
  // Multiply-accumulates and weight elements at input width `in` and output width `out` (0 for an
  // activation or add).
  double macs(int64_t in, int64_t out) const;
  double params(int64_t in, int64_t out) const;
  // One call of the op at widths (in, out) on fresh random data (channels_last for convs when
  // asked), for measure::time_calls.
  std::function<void()> runner(int64_t in, int64_t out, bool channels_last) const;
};

// Every conv (not transposed) and every linear layer whose weight is a named parameter, in the
// trace's order, then the ReLUs, hardtanhs and adds of two activations whose input comes from one of
// those layers through other such ops, norms and views (a residual add follows its first input's
// layer). Activation matmuls (attention), transposed convs and other ops are not listed: cost
// models count them in their fixed part.
std::vector<OpSite> op_sites(const graph::Trace& trace);

}  // namespace libprune::measure
