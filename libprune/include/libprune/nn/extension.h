#pragma once
// Forward extensions owned by a module: what fake quantization, observers and deploy-time batch-norm
// folding attach to a layer.
//
// LibTorch C++ modules have no forward hooks, and a typed member (torch::nn::Conv2d conv1) cannot be
// swapped for a wrapper of another type. So an extension is a submodule of the layer it extends,
// installed under a name: its parameters and buffers are the layer's ("conv1.weight_fake_quant.scale"),
// and state_dict, parameters(), optimizers, checkpoints, plan replay and the pruner see them like any
// other. Removing it removes its state. A layer may carry several; they compose in installation order,
// the first outermost.
//
// An extension acts on a call in two ways, both optional:
//   - forward(): around the layer's forward (observe or fake-quantise inputs and outputs, or replace the
//     computation); `next` runs the rest of the chain and then the layer itself;
//   - transform(): a value to use in place of one of the layer's tensors for this call ("weight" ->
//     fake-quantised weight, or the batch-norm-folded weight). The transforms of every extension apply
//     in order (fold, then quantise) and the layer's own forward runs with the result.
//
// Extensions run when the layer is called through libprune::nn::call (nn/call.h), as the zoo models
// do. While none is installed in the process (none ever, or all removed) the cost of a call is one
// relaxed atomic load: no lock, no lookup. A layer's tensors are swapped for its transforms' results
// during a call, so a model with transforming extensions must not be called from two threads at once.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace libprune::nn {

using Forward = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;

// One of the extension's own tensors that runs along one of its layer's channels (a per-channel scale
// runs along the weight's output channels): the pruner cuts it with them.
struct ChannelTie {
  std::string tensor;         // the extension's parameter or buffer, e.g. "scale"
  int64_t dim = 0;
  std::string layer_tensor;   // the layer's tensor it follows, e.g. "weight"
  int64_t layer_dim = 0;
};

class ExtensionImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  // Around the layer's forward; the default passes the call on.
  virtual torch::Tensor forward(torch::nn::Module& layer, const std::vector<torch::Tensor>& inputs, const Forward& next);
  // The layer tensors this extension replaces for a call ("weight", "bias"); transform() gets each.
  virtual std::vector<std::string> transformed() const { return {}; }
  virtual torch::Tensor transform(torch::nn::Module& layer, const std::string& tensor, const torch::Tensor& value);
  virtual std::vector<ChannelTie> channel_ties() const { return {}; }
  // transformed(), as install() read it: the chain reads this on every call.
  const std::vector<std::string>& transformed_tensors() const { return transformed_; }

 private:
  friend void install(torch::nn::Module&, const std::string&, std::shared_ptr<ExtensionImpl>, bool);
  std::vector<std::string> transformed_;
};

// Installs `extension` on `layer` under `name` (a submodule name: no dots), last in its chain, or
// first with `first` (batch-norm folding goes before fake quantization: fold, then quantise). Throws,
// changing nothing, when the name is taken (an extension installed twice), the extension is null or
// already installed here, or it transforms a tensor this kind of layer cannot take in place of its
// own (only the weight and bias of Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear can be substituted).
void install(torch::nn::Module& layer, const std::string& name, std::shared_ptr<ExtensionImpl> extension,
             bool first = false);
// Removes the extension `name` and its state; throws, changing nothing, when there is none.
void remove(torch::nn::Module& layer, const std::string& name);
// The layer's extensions in chain order.
std::vector<std::pair<std::string, std::shared_ptr<ExtensionImpl>>> extensions(const torch::nn::Module& layer);
// The layer's extension installed as `name`, or null.
std::shared_ptr<ExtensionImpl> extension(const torch::nn::Module& layer, const std::string& name);
bool has_extensions(const torch::nn::Module& layer);

namespace detail {
// Whether any extension is installed in the process: the only cost of a call when none is.
bool extensions_installed();
// Runs `layer` through its extension chain; `inner` is the layer's own forward.
torch::Tensor run_extended(torch::nn::Module& layer, const std::vector<torch::Tensor>& inputs, const Forward& inner);
}  // namespace detail

}  // namespace libprune::nn
