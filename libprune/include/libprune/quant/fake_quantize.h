#pragma once
// Fake quantization as forward extensions (nn/extension.h), the building block of quantization-aware
// training (QAT) and of post-training calibration.
//
// A FakeQuantize observes the values that pass (their running min and max) and rounds them to the
// integer grid those ranges define, keeping float: x -> (clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale,
// with the straight-through estimator for the gradient. It runs ATen's fused observer + fake-quant
// kernel, the one torch.ao's FusedMovingAvgObsFakeQuantize runs, so on the same inputs its outputs
// and quantization parameters equal torch.ao's.
//
// Its state is buffers of the layer it is installed on ("conv1.weight_fake_quant.scale"), so the
// state_dict, checkpoints and the pruner see it; a per-channel weight quantizer's state is cut with
// the weight's output channels (channel_ties).
#include "libprune/nn/extension.h"

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace libprune::quant {

// How an observer turns what it saw into a range. moving_average: running min/max updated by
// `averaging_constant` per call (torch.ao's QAT default); min_max: the smallest and largest values
// ever seen (the calibration choice: no batch is forgotten); percentile: per batch the
// (100 - p)-th and p-th percentiles of the values (`percentile` p, e.g. 99.99), the widest over the
// batches, so rare outliers do not stretch the grid; mse: per batch the range [b x min, a x max]
// (a, then b, searched in 2^-10 .. 1) whose grid rounds the values with the least squared error,
// the widest over the batches (calibration: clips as far as clipping pays, with no percentile to choose). Per-channel
// weights keep min_max under percentile and mse.
enum class Observer { moving_average, min_max, percentile, mse };

// What is quantised, which fixes the grid: weights are signed, symmetric (zero point 0, as oneDNN
// requires) and per output channel; activations are unsigned, affine and per tensor.
enum class Role { weight, activation };

struct FakeQuantizeOptions {
  FakeQuantizeOptions(Role role, int64_t channels) : role_(role), channels_(channels) {}
  TORCH_ARG(Role, role);
  // Output channels of a per-channel weight quantiser; 1 for an activation.
  TORCH_ARG(int64_t, channels);
  // 2 to 8: fewer than 8 only simulates (only 8 bits convert to int8 kernels).
  TORCH_ARG(int64_t, bits) = 8;
  TORCH_ARG(Observer, observer) = Observer::moving_average;
  TORCH_ARG(double, averaging_constant) = 0.01;
  TORCH_ARG(double, percentile) = 99.99;
  // LSQ (Esser et al. 2020): the scale is a parameter, learned by the optimizer once the observer is
  // off (the observed range gives its first value), with the gradient scaled by 1 / sqrt(numel x qmax).
  // The zero point stays the observed one. ATen's learnable fake-quantization kernels (torch.ao's
  // _LearnableFakeQuantize) do the rounding and the gradients.
  TORCH_ARG(bool, learnable) = false;
};

// The integer range of `bits` for a role: weights [-2^(b-1), 2^(b-1) - 1], activations [0, 2^b - 1].
// Throws naming the bits and the allowed range when bits is outside 2..8.
std::pair<int64_t, int64_t> integer_range(Role role, int64_t bits);

// A quantiser's state as tensors: a FakeQuantize's buffers, or a Python module's
// (libprune.quantize.FakeQuantize). Per channel ([C]) for a weight, [1] for an activation (min_val
// and max_val are 0-dim there, as in torch.ao). quant_range ([qmin, qmax], optional) records the
// integer range the state was made for, so a state_dict saved with other bits is caught when used.
struct FakeQuantState {
  torch::Tensor scale, zero_point, min_val, max_val, observer_enabled, fake_quant_enabled, quant_range;
};

// One call of a quantiser on `x`: observes (when enabled and `training`) and rounds (when enabled);
// with a learnable scale in training with the observer off, the scale gets a gradient.
// The math behind FakeQuantize, and behind Python's libprune.quantize.FakeQuantize.
torch::Tensor fake_quantize(const torch::Tensor& x, const FakeQuantState& state, const FakeQuantizeOptions& options,
                           bool training);
// Sets scale and zero point from the observed range, as the rounding does.
void calculate_qparams(const FakeQuantState& state, const FakeQuantizeOptions& options);
// The parameters convert uses: from the observed range (calculate_qparams), except a learnable scale
// whose observer is off, which stays as training left it (and its zero point with it).
void settle_qparams(const FakeQuantState& state, const FakeQuantizeOptions& options);
// Whether the range holds finite values.
bool observed(const FakeQuantState& state);

class FakeQuantizeImpl : public nn::ExtensionImpl {
 public:
  // `input`: for an activation quantiser, which input of the layer it acts on (it then rounds that
  // input before the layer runs); -1 (the default) acts on the layer's output.
  explicit FakeQuantizeImpl(FakeQuantizeOptions options, int input = -1);

  // Observes (when enabled and in training mode) and fake-quantises (when enabled) one tensor.
  torch::Tensor apply(const torch::Tensor& x);
  // Whether the observer has seen finite values, so scale and zero point mean something.
  bool observed() const;
  // Sets scale and zero point from the observed range, as the rounding does (convert calls it, so a
  // range observed with rounding off still converts).
  void calculate_qparams();
  void enable_observer(bool on);
  void enable_fake_quant(bool on);
  bool observer_enabled() const;
  bool fake_quant_enabled() const;

  torch::Tensor forward(torch::nn::Module& layer, const std::vector<torch::Tensor>& inputs,
                        const nn::Forward& next) override;
  std::vector<std::string> transformed() const override;
  torch::Tensor transform(torch::nn::Module& layer, const std::string& tensor, const torch::Tensor& value) override;
  std::vector<nn::ChannelTie> channel_ties() const override;

  const FakeQuantizeOptions& options() const { return options_; }
  int input() const { return input_; }
  int64_t quant_min() const { return qmin_; }
  int64_t quant_max() const { return qmax_; }

  // The state (FakeQuantState), as buffers; `scale` is a parameter when the options make it learnable.
  torch::Tensor scale, zero_point, min_val, max_val;
  FakeQuantState state() const;

 private:
  FakeQuantizeOptions options_;
  int input_;
  int64_t qmin_, qmax_;
  torch::Tensor observer_on_, fake_quant_on_, quant_range_;
};
TORCH_MODULE(FakeQuantize);

// QAT's simulated batch-norm fold (torch.ao's ConvBn approximation), on a conv followed by a batch
// norm: the conv runs with w * gamma / sqrt(running_var + eps), which the conv's weight quantiser then
// rounds, and its output is divided by the same factor, so the batch norm that follows still sees
// unfolded values (and normalises by the batch while training). In eval mode the pair computes
// exactly what the int8 conv with the folded weight computes. Channels whose factor is near zero
// (a batch norm whose scale pruning or an L1 penalty drove to zero) use 1 instead, so nothing is
// divided by zero; their output is the batch norm's shift either way.
class SimulatedFoldImpl : public nn::ExtensionImpl {
 public:
  explicit SimulatedFoldImpl(std::shared_ptr<torch::nn::Module> norm);
  torch::Tensor forward(torch::nn::Module& conv, const std::vector<torch::Tensor>& inputs,
                        const nn::Forward& next) override;
  std::vector<std::string> transformed() const override { return {"weight", "bias"}; }
  torch::Tensor transform(torch::nn::Module& conv, const std::string& tensor, const torch::Tensor& value) override;
  // gamma / sqrt(running_var + eps) per channel, with near-zero factors replaced by 1.
  torch::Tensor factor() const;
  std::shared_ptr<torch::nn::Module> norm() const;

 private:
  std::weak_ptr<torch::nn::Module> norm_;
};
TORCH_MODULE(SimulatedFold);

// The names they are installed under.
constexpr const char* kWeightFakeQuant = "weight_fake_quant";
constexpr const char* kOutputFakeQuant = "output_fake_quant";
constexpr const char* kSimulatedFold = "bn_fold";
// The quantiser of input `i` of a layer: "input_fake_quant" for the first, "input1_fake_quant", ...
std::string input_fake_quant_name(int i);

}  // namespace libprune::quant
