#pragma once
// Quantization of a whole model: placement from one forward pass, quantization-aware training (QAT),
// post-training calibration (PTQ), and conversion to int8 kernels.
//
//   auto report = quant::prepare(*model, forward);       // fake quantisers and simulated folds
//   ... train (QAT) or run a few batches in eval mode (PTQ calibration) ...
//   quant::convert(*model, forward);                      // int8 convolutions, linears and adds
//   model->forward(images);                               // the same model code, now in int8
//
// Placement is read from the model's calls, not written per model: one forward pass records which
// layer reads which layer's output, and the patterns a CPU int8 runtime fuses are found there:
// conv -> batch norm (-> ReLU), linear (-> ReLU), residual add (-> ReLU). Activations are observed
// after the fused ReLU, so no range is spent on negative values. ReLU, ReLU6, max pooling, flatten
// and dropout pass int8 values through; a layer that cannot run in int8 stays float (its inputs are
// dequantised) and is listed with the reason. Layers must be called through libprune::nn::call, as
// the zoo models do; others are listed too.
//
// All state is extensions' buffers (nn/extension.h), so state_dict(), checkpoints, parameters() and
// the pruner see it: prune first, then quantize; a model with quantisers installed can still be cut
// (per-channel weight state shrinks with its channels).
#include "libprune/graph/trace.h"
#include "libprune/io/state_dict.h"
#include "libprune/options.h"
#include "libprune/quant/fake_quantize.h"

#include <torch/torch.h>

#include <string>
#include <vector>

namespace libprune::quant {

using Names = std::vector<std::string>;

// X("key", type, field, default, check, "meaning"): a recipe's `quantization` section, C++ and Python.
#define LIBPRUNE_QUANT_OPTIONS(X)                                                                                      \
  X("bits", int64_t, bits, 8, ::libprune::options::check::in_range(2, false, 8, false, "use 8 to convert, 4 to simulate"),\
    "2 to 8: below 8 the model is trained and evaluated simulated; only 8 converts to int8")                            \
  X("observer", ::libprune::quant::Observer, observer, ::libprune::quant::Observer::moving_average, nullptr,            \
    "moving_average (QAT: running min/max), min_max (calibration: every value seen counts), percentile "             \
    "(calibration: outliers beyond the percentile are clipped) or mse (calibration: the range whose grid rounds each " \
    "batch with the least squared error)")                                                                            \
  X("percentile", double, percentile, 99.99, ::libprune::options::check::in_range(50, true, 100, false, "e.g. 99.99"),\
    "percentile observer: the upper percentile kept per batch (the lower is 100 minus it)")                            \
  X("averaging_constant", double, averaging_constant, 0.01,                                                             \
    ::libprune::options::check::in_range(0, true, 1, false, "e.g. 0.01"), "moving_average: the running ranges' step") \
  X("simulated_fold", bool, simulated_fold, false, nullptr,                                                            \
    "conv -> batch norm pairs train with torch.ao's simulated fold (weight x BN factor before rounding, output divided " \
    "back); per-channel symmetric weights round to the same integers without it, so by default convert folds and "      \
    "QAT skips two passes per conv")                                                                                 \
  X("learnable_scales", bool, learnable_scales, false, nullptr,                                                        \
    "LSQ: each quantiser's scale becomes a parameter that the optimizer learns (no weight decay) once the observers "   \
    "freeze; the observed range gives its first value and convert keeps the learned value")                           \
  X("keep_float", ::libprune::quant::Names, keep_float, {}, nullptr,                                                   \
    "mixed precision: units that stay float, named by any of their layers (\"conv1\" keeps conv1 + bn1 + relu); "     \
    "they get no quantisers, convert runs them in float and the next unit rounds their output; pick them from "        \
    "the quantization sensitivity scan (report.quant_sensitivity_bits)")

struct QuantOptions {
  QuantOptions() = default;
  LIBPRUNE_QUANT_OPTIONS(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<QuantOptions>>& specs();
};

// What prepare() or convert() did, layer by layer.
struct Report {
  // One line per quantised unit: "layer1.0.conv1 + bn1 + relu1".
  std::vector<std::string> quantized;
  // "name: why it stays float".
  std::vector<std::string> skipped;
  std::string explain() const;
};

// Installs fake quantisers (and, with simulated_fold, torch.ao's simulated fold on conv -> batch norm
// pairs) on `model`.
// `forward` runs the model once on example inputs (graph::Forward, as for tracing). Throws, changing
// nothing, when the model is already prepared or converted, or bits are outside 2..8.
Report prepare(torch::nn::Module& model, const graph::Forward& forward, const QuantOptions& options = {});

// What prepare would quantise and leave float, changing nothing (one pass of `forward`); throws as
// prepare does for a keep_float name that is no unit's layer, or one that keeps every unit. Recipes
// call it before training, so a bad name fails in seconds, not after the training it follows.
Report placement(torch::nn::Module& model, const graph::Forward& forward, const QuantOptions& options = {});

// Turns every observer on or off (off: the ranges are frozen; training goes on with them).
void enable_observers(torch::nn::Module& model, bool on);
// Post-training calibration: the model in eval mode (batch norms use their running statistics), its
// quantisers in training mode with rounding off, so they only watch. Run batches, then convert.
void calibration_mode(torch::nn::Module& model);
// Turns the rounding on or off (off: the model computes in float; observers may still watch).
void enable_fake_quant(torch::nn::Module& model, bool on);
// The quantisers' learnable scales (learnable_scales), for an optimizer parameter group without
// weight decay (train::QatCallback adds one).
std::vector<torch::Tensor> learnable_scales(torch::nn::Module& model);
// Whether the model has fake quantisers / int8 kernels installed.
bool is_prepared(const torch::nn::Module& model);
bool is_converted(const torch::nn::Module& model);

struct ConvertOptions {
  // "onednn" (x86, the default) or "qnnpack" (ARM; slower on x86); must be built into LibTorch.
  TORCH_ARG(std::string, engine) = "onednn";
};

// Replaces a prepared model's fake quantisers with int8 kernels that use exactly the scales and zero
// points the observers hold: conv + batch norm (+ ReLU) and add (+ ReLU) fused, weights per-channel
// int8, activations quint8 in channels_last. The model's float weights stay; the int8 state is in
// the extensions' buffers. Throws, changing
// nothing, when the model was not prepared, an observer has seen nothing finite, bits are not 8, or
// the engine is not built in.
Report convert(torch::nn::Module& model, const graph::Forward& forward, const ConvertOptions& options = {});

// A conv's or linear's weight as its int8 kernel takes it: per-channel qint8 (zero points 0) on the
// grid its quantiser trained (`scale`, per output channel), with the following batch norm's factor
// gamma / sqrt(var + eps) folded in when `factor` is defined. Without the simulated fold the
// quantiser watched the unfolded weight, and the folded grid is scale x |factor|. Python's convert uses it.
torch::Tensor int8_weight(const torch::Tensor& weight, const torch::Tensor& scale, const torch::Tensor& factor,
                          bool simulated_fold);

// The int8 model a deploy file (int8_state_dict, `model_int8.pt`) holds, on `model`: a float model built
// as the converted one was (same architecture and options, pruned with the same plans; its float
// weights do not matter). Places the units from `forward` as prepare does, converts, then takes every
// int8 weight, scale, bias and quantization parameter from `deploy` (named `source` in errors), so
// the model computes what the saved one did, bit for bit. A unit the file holds no int8 kernel for
// (no `<layer>.int8.qparams`) was kept float (QuantOptions::keep_float) and stays float here too.
// Throws, leaving the model as it was, when the model is already prepared or converted or the file
// does not fit it (naming the first tensor).
Report load_int8(torch::nn::Module& model, const graph::Forward& forward, const io::StateDict& deploy,
                 const std::string& source = "deploy file", const ConvertOptions& options = {});

// Packs the int8 weights again and reads the kernels' quantization parameters from their buffers
// (after a state_dict load). oneDNN caches compiled kernels per packed weight, input shape and
// thread count, so time each shape and thread count on fresh packs (measure/latency does).
void repack(torch::nn::Module& model);
// Weight packs the int8 kernels have made in this process (each conv or linear packs on its first
// call after repack(), and again for a shape its pack refuses); tests check that timing starts
// from fresh packs.
int64_t packs_made();

// x rounded to quint8 on the grid (scale, zero_point): ATen's quantize_per_tensor, integer for integer
// (clamp(zero_point + nearbyint(x * (1 / scale)), 0, 255)), in x's memory format. Dense float32 CPU
// tensors take a vectorised loop (ATen's is scalar without fbgemm: 4 ms of a 66 ms int8 ResNet-50
// pass at batch 8; NaN rounds to 0); anything else goes to ATen. The int8 kernels' float inputs and
// Python's convert round with it. Throws naming the value when scale is not a positive finite number
// or zero_point is outside 0..255.
torch::Tensor quantize_per_tensor(const torch::Tensor& x, double scale, int64_t zero_point);

// Its inverse, ATen's dequantize value for value ((q - zero_point) * scale), vectorised for dense
// per-tensor quint8 CPU tensors (ATen's took 1.6 ms per million elements here); other quantized
// tensors go to ATen, and a float tensor comes back as it is.
torch::Tensor dequantize(const torch::Tensor& q);

// Bytes of the int8 model's state as its deploy file holds it: the int8 weights, their per-channel
// scales, the float biases and each kernel's input and output scale and zero point, plus the float
// tensors of layers left in float (batch norms folded into int8 convolutions and replaced float
// weights are not counted).
int64_t int8_state_bytes(const torch::nn::Module& model);
// Those tensors by state_dict name ("layer1.0.conv1.int8.weight", ".weight_scale", ".bias", and
// ".qparams": output scale and zero point, 1 if the output leaves as float, then per input its scale
// and zero point, scale 0 for none): io::write_state_dict writes them as the deploy file, which
// torch.load reads and torch.ops.quantized runs (tests/python/test_quantize.py does).
io::StateDict int8_state_dict(const torch::nn::Module& model);

}  // namespace libprune::quant

namespace libprune::options {
template <>
struct EnumNames<quant::Observer> {
  static constexpr const char* what = "observer";
  static constexpr const char* names[] = {"moving_average", "min_max", "percentile", "mse"};
};
}  // namespace libprune::options
