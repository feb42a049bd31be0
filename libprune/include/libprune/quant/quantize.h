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
#include "libprune/quant/fake_quantize.h"

#include <torch/torch.h>

#include <string>
#include <vector>

namespace libprune::quant {

struct QuantOptions {
  // 2 to 8; below 8 the model can be trained and evaluated (simulated), not converted.
  TORCH_ARG(int64_t, bits) = 8;
  TORCH_ARG(Observer, observer) = Observer::moving_average;
  TORCH_ARG(double, averaging_constant) = 0.01;
};

// What prepare() or convert() did, layer by layer.
struct Report {
  // One line per quantised unit: "layer1.0.conv1 + bn1 + relu1".
  std::vector<std::string> quantized;
  // "name: why it stays float".
  std::vector<std::string> skipped;
  std::string explain() const;
};

// Installs fake quantisers (and, on conv -> batch norm pairs, the simulated fold) on `model`.
// `forward` runs the model once on example inputs (graph::Forward, as for tracing). Throws, changing
// nothing, when the model is already prepared or converted, or bits are outside 2..8.
Report prepare(torch::nn::Module& model, const graph::Forward& forward, const QuantOptions& options = {});

// Turns every observer on or off (off: the ranges are frozen; training goes on with them).
void enable_observers(torch::nn::Module& model, bool on);
// Turns the rounding on or off (off: the model computes in float; observers may still watch).
void enable_fake_quant(torch::nn::Module& model, bool on);
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

// Packs the int8 weights again. oneDNN caches compiled kernels per packed weight, input shape and
// thread count, so time each shape and thread count on fresh packs (measure/latency does).
void repack(torch::nn::Module& model);

// Bytes of the int8 model's state as a deploy file would hold it: the int8 weights, their scales and
// the float biases, plus the float tensors of layers left in float (batch norms folded into int8
// convolutions and replaced float weights are not counted; the activations' scales and zero points,
// 16 bytes a kernel, are members of the kernels, not yet state).
int64_t int8_state_bytes(const torch::nn::Module& model);

}  // namespace libprune::quant
