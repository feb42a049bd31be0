#pragma once
// What the engine needs from a model, whichever language owns it: its named tensors, its module
// names, a way into eval mode, and a way to bring module metadata in line after tensors shrink.
// C++ modules get ModuleAccess; the Python bindings implement the same interface over an
// nn.Module (updating Python attributes such as in_channels).
#include "libprune/graph/dependency_graph.h"

#include <torch/torch.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace libprune::layers {

using TensorList = std::vector<std::pair<std::string, torch::Tensor>>;

// A tensor dimension a module's own code ties to something the graph cannot see (nn.MultiheadAttention
// derives head_dim from embed_dim): groups that cut it are pinned with `reason`.
struct TiedTensor {
  std::string tensor;
  int64_t dim = 0;
  std::string reason;
};

class ModelAccess {
 public:
  virtual ~ModelAccess() = default;
  virtual TensorList parameters() const = 0;
  virtual TensorList buffers() const = 0;
  virtual std::vector<std::string> module_names() const = 0;
  // Sets module options/attributes from the current tensor shapes.
  virtual void update_metadata() = 0;
  // Eval mode for every submodule until the returned handle is destroyed, then the old flags.
  virtual std::shared_ptr<void> eval_scope() = 0;
  virtual std::vector<TiedTensor> tied_tensors() const { return {}; }
  // Tensor dims cut with ones the graph sees (graph::Companion), given the model's tensors. By
  // default, found by name for any model: each norm's running statistics with its weight
  // ("bn1.running_mean" with "bn1.weight").
  virtual std::vector<graph::Companion> companions(const TensorList& parameters, const TensorList& buffers) const;
};

// A model's named tensors and companions, read once for one operation (a step of the pruner, a plan
// applied): a Python model's are read through the interpreter, and reading them at every use cost
// more than the cut itself. The tensors keep their identity through a cut (set_data), so the
// snapshot stays valid while the model's structure does.
struct ModelTensors {
  explicit ModelTensors(const ModelAccess& model);
  TensorList parameters, buffers;
  std::vector<graph::Companion> companions;
  // Parameters and buffers by name.
  std::map<std::string, torch::Tensor> by_name() const;
};

class ModuleAccess : public ModelAccess {
 public:
  explicit ModuleAccess(std::shared_ptr<torch::nn::Module> module);
  TensorList parameters() const override;
  TensorList buffers() const override;
  std::vector<std::string> module_names() const override;
  void update_metadata() override;
  std::shared_ptr<void> eval_scope() override;
  std::vector<TiedTensor> tied_tensors() const override;
  // The defaults, and each forward extension's per-channel state (nn::ChannelTie).
  std::vector<graph::Companion> companions(const TensorList& parameters, const TensorList& buffers) const override;
  torch::nn::Module& module() { return *module_; }

 private:
  std::shared_ptr<torch::nn::Module> module_;
};

// An optimizer as the surgery sees it: the parameters it holds, and per parameter name the state
// tensors shaped like the parameter (momentum, Adam moments), which shrink with it in place.
struct OptimizerView {
  bool given = false;
  std::set<const c10::TensorImpl*> held;
  std::map<std::string, std::vector<torch::Tensor>> state;
};

// Reads a torch::optim optimizer (SGD, Adam, AdamW, RMSprop, Adagrad) over `model`'s parameters.
OptimizerView view_of(torch::optim::Optimizer& optimizer, const ModelAccess& model);

}  // namespace libprune::layers
