#include "libprune/nn/hook.h"

#include <atomic>
#include <mutex>
#include <unordered_map>

namespace libprune::nn {
namespace {

struct Table {
  std::mutex mutex;
  std::unordered_map<const torch::nn::Module*, ForwardWrapper> wrappers;
  std::atomic<std::size_t> size{0};
};

Table& table() {
  static Table t;
  return t;
}

}  // namespace

void set_forward_wrapper(const torch::nn::Module& module, ForwardWrapper wrapper) {
  TORCH_CHECK(wrapper, "set_forward_wrapper: the wrapper for module '", module.name(),
              "' is empty; pass a callable or use remove_forward_wrapper()");
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.wrappers[&module] = std::move(wrapper);
  t.size.store(t.wrappers.size(), std::memory_order_release);
}

void remove_forward_wrapper(const torch::nn::Module& module) {
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.wrappers.erase(&module);
  t.size.store(t.wrappers.size(), std::memory_order_release);
}

void clear_forward_wrappers() {
  auto& t = table();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.wrappers.clear();
  t.size.store(0, std::memory_order_release);
}

std::size_t forward_wrapper_count() { return table().size.load(std::memory_order_acquire); }

namespace detail {
const ForwardWrapper* find_forward_wrapper(const torch::nn::Module& module) {
  auto& t = table();
  if (t.size.load(std::memory_order_acquire) == 0) return nullptr;
  std::lock_guard<std::mutex> lock(t.mutex);
  auto it = t.wrappers.find(&module);
  return it == t.wrappers.end() ? nullptr : &it->second;
}
}  // namespace detail

namespace {
torch::Tensor run_children(torch::nn::SequentialImpl& sequential, torch::Tensor x) {
  for (auto& child : sequential) {
    const auto module = child.ptr();
    if (auto nested = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(module)) {
      x = run_children(*nested, x);
    } else if (const ForwardWrapper* wrapper = detail::find_forward_wrapper(*module)) {
      x = (*wrapper)(*module, {x},
                     [&child](const std::vector<torch::Tensor>& in) { return child.forward(in.at(0)); });
    } else {
      x = child.forward(x);
    }
  }
  return x;
}
}  // namespace

torch::Tensor call_sequential(const torch::nn::Sequential& sequential, torch::Tensor x) {
  return run_children(*sequential.ptr(), std::move(x));
}

torch::Tensor ChainImpl::forward(torch::Tensor x) { return run_children(*this, std::move(x)); }

torch::Tensor AddImpl::forward(const torch::Tensor& a, const torch::Tensor& b) {
  if (const ForwardWrapper* wrapper = detail::find_forward_wrapper(*this)) {
    return (*wrapper)(*this, {a, b}, [](const std::vector<torch::Tensor>& in) { return in.at(0) + in.at(1); });
  }
  return a + b;
}

}  // namespace libprune::nn
