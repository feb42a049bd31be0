#pragma once
// Inside quant/: where the quantisers and int8 kernels go, read from one forward pass.
#include "libprune/graph/trace.h"
#include "libprune/nn/extension.h"
#include "libprune/quant/quantize.h"

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace libprune::quant::detail {

using ModulePtr = std::shared_ptr<torch::nn::Module>;

// One call of a leaf layer on the recorded pass.
struct Call {
  std::string name;
  ModulePtr module;
  std::vector<torch::Tensor> inputs;  // kept alive, so no address is reused during the pass
  torch::Tensor output;
};

enum class Kind { conv, linear, add };

// What an int8 runtime runs as one kernel: conv (+ batch norm) (+ ReLU), linear (+ ReLU), add (+ ReLU).
struct Unit {
  Kind kind = Kind::conv;
  size_t layer = 0;                  // index in the recording
  std::optional<size_t> norm, relu;  // fused batch norm and ReLU
  size_t end = 0;                    // the call whose output is the unit's output
  std::vector<bool> observe_input;   // per input: its producer is not an int8 unit, so it gets a quantiser
  bool read_by_layers = false;       // a later recorded layer reads the output (else it leaves as float)
  bool rounds_output = false;        // the output has a grid (read by layers, or a conv/linear's not returned)
};

struct Placement {
  std::vector<Call> calls;
  std::vector<Unit> units;
  std::vector<size_t> float_calls;  // layers that stay float (their inputs are dequantised in int8)
  std::vector<size_t> kept_float;   // the layer call of each unit kept float (QuantOptions::keep_float)
  std::vector<size_t> asked_float;  // those keep_float named (marked for convert; the adds beside them follow)
  Report report;
};

// Marks the layer of a unit kept float by QuantOptions::keep_float, so that convert (which places the
// prepared model again) keeps it float too. No state, no effect on the call.
constexpr const char* kKeepFloat = "keep_float";
class KeepFloatImpl : public nn::ExtensionImpl {};

// Records one pass of `forward` (eval mode, no grad) and finds the units. A unit with a layer named
// in `keep_float`, or whose first layer carries the kKeepFloat mark, stays float: its layers join
// float_calls, and the units reading its output observe their input. Throws, naming it, for a name
// that is no unit's layer, or when every unit would stay float.
Placement place(torch::nn::Module& model, const graph::Forward& forward, const Names& keep_float = {});

// The model's leaf layers by name (extensions are not layers).
std::vector<std::pair<std::string, ModulePtr>> leaf_layers(torch::nn::Module& model);

// Extensions installed so far, removed in reverse by undo() (all or nothing).
class Installs {
 public:
  void add(const ModulePtr& layer, const std::string& name, std::shared_ptr<nn::ExtensionImpl> ext, bool first = false);
  void undo();
  void keep() { done_.clear(); }

 private:
  std::vector<std::pair<ModulePtr, std::string>> done_;
};

// The quantisers (and, with simulated_fold, the simulated folds) of p's units on the model's layers,
// not yet kept: the caller keeps or undoes them. Nothing stays installed when it throws.
Installs install_fake_quant(const Placement& p, const QuantOptions& options);

// Every installed extension of type T in the model, by name.
template <typename T>
std::vector<std::pair<std::string, std::shared_ptr<T>>> installed_of(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<T>>> out;
  for (const auto& item : model.named_modules("", false)) {
    if (auto ext = std::dynamic_pointer_cast<T>(item.value())) out.emplace_back(item.key(), ext);
  }
  return out;
}

}  // namespace libprune::quant::detail
