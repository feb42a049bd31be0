#pragma once
#include "libprune/nn/inputs.h"

#include <torch/torch.h>

#include <memory>

namespace libprune::models {

// The common base of zoo models, so that the registry, the Trainer and count_ops can hold any
// of them. Each concrete model also has its own TORCH_MODULE holder (ResNet, VGG, ...).
class ModelImpl : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  // A batch's named inputs (nn::Inputs), as the Trainer, op counting and latency call a model. The
  // default passes the only input to forward(x); text models read input_ids, attention_mask, ...
  virtual torch::Tensor forward_inputs(const nn::Inputs& inputs) { return forward(inputs.single()); }
};

using ModelPtr = std::shared_ptr<ModelImpl>;

// torchvision's features -> adaptive average pool -> flatten -> classifier layout (VGG, MobileNetV2):
// both Sequentials are called through nn::call_sequential, so extensions reach their layers.
class FeaturesClassifierImpl : public ModelImpl {
 public:
  torch::Tensor forward(torch::Tensor x) override;
  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};

 protected:
  // The pool's output side (7 for VGG, 1 for MobileNetV2).
  explicit FeaturesClassifierImpl(int64_t pooled) : pooled_(pooled) {}
  // Registers both under their torchvision names.
  void register_features_and_classifier(torch::nn::Sequential f, torch::nn::Sequential c);

 private:
  int64_t pooled_;
};

// Options every classifier in the zoo understands; the registry passes them through.
struct ModelOptions {
  ModelOptions() = default;
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  // Text models: the tokenizer's vocabulary size (0: the model's default, BERT's 30522).
  TORCH_ARG(int64_t, vocab_size) = 0;
};

}  // namespace libprune::models
