#pragma once
// The named input tensors of one batch or example, in order: an image batch ("images" [B, C, H, W])
// or a text batch ("input_ids" and "attention_mask", integer [B, T]). Datasets produce them, the
// loader and the Trainer carry them, models take them (models::ModelImpl::forward_inputs), and op
// counting and latency measurement run on them.
#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace libprune::nn {

class Inputs {
 public:
  using Item = std::pair<std::string, torch::Tensor>;
  Inputs() = default;
  Inputs(std::initializer_list<Item> items);
  // Adds or replaces `name`.
  Inputs& set(const std::string& name, torch::Tensor value);
  bool has(const std::string& name) const;
  // The tensor `name`; throws naming it and the inputs there are.
  const torch::Tensor& at(const std::string& name) const;
  // The only input (image models); throws when there are several or none.
  const torch::Tensor& single() const;
  const std::vector<Item>& items() const { return items_; }
  std::vector<torch::Tensor> tensors() const;
  size_t size() const { return items_.size(); }
  // Examples in the batch: the first input's size along dim 0.
  int64_t batch_size() const;
  // Every tensor mapped through `fn` (to a device, a memory format).
  Inputs map(const std::function<torch::Tensor(const torch::Tensor&)>& fn) const;
  // "images [1, 3, 224, 224]" / "input_ids [8, 64] (Long), attention_mask [8, 64] (Long)" for messages.
  std::string describe() const;

 private:
  std::vector<Item> items_;
};

}  // namespace libprune::nn
