#include "libprune/nn/extension.h"

#include <algorithm>
#include <atomic>
#include <set>

namespace libprune::nn {
namespace {

// Extensions installed and not removed, in the whole process: zero keeps every call on the plain path.
std::atomic<int64_t>& installed_count() {
  static std::atomic<int64_t> count{0};
  return count;
}

template <typename Impl>
torch::Tensor* weight_or_bias(torch::nn::Module& layer, const std::string& tensor) {
  auto* impl = dynamic_cast<Impl*>(&layer);
  if (!impl) return nullptr;
  if (tensor == "weight") return &impl->weight;
  if (tensor == "bias") return &impl->bias;
  return nullptr;
}

// The member a layer's own forward reads for `tensor`, so a transformed value can stand in for a call.
torch::Tensor* member_slot(torch::nn::Module& layer, const std::string& tensor) {
  using namespace torch::nn;
  for (auto* slot : {weight_or_bias<Conv2dImpl>(layer, tensor), weight_or_bias<LinearImpl>(layer, tensor),
                     weight_or_bias<Conv1dImpl>(layer, tensor), weight_or_bias<Conv3dImpl>(layer, tensor),
                     weight_or_bias<ConvTranspose1dImpl>(layer, tensor),
                     weight_or_bias<ConvTranspose2dImpl>(layer, tensor),
                     weight_or_bias<ConvTranspose3dImpl>(layer, tensor)}) {
    if (slot) return slot;
  }
  return nullptr;
}

using Extensions = std::vector<std::shared_ptr<ExtensionImpl>>;

// The extension children of a layer, in chain order.
Extensions chain_of(const torch::nn::Module& layer) {
  Extensions chain;
  for (auto& child : layer.children()) {
    if (auto ext = std::dynamic_pointer_cast<ExtensionImpl>(child)) chain.push_back(std::move(ext));
  }
  return chain;
}

// Puts the transformed tensors in the layer's members for one call, and the originals back after,
// also when a transform throws halfway.
class Substitution {
 public:
  Substitution(torch::nn::Module& layer, const Extensions& chain) {
    std::vector<std::string> names;
    for (const auto& ext : chain) {
      for (const auto& t : ext->transformed_tensors()) {
        if (std::find(names.begin(), names.end(), t) == names.end()) names.push_back(t);
      }
    }
    try {
      for (const auto& name : names) {
        torch::Tensor* slot = member_slot(layer, name);
        if (!slot) continue;  // install() refused such extensions
        torch::Tensor value = *slot;
        for (const auto& ext : chain) {
          const auto& t = ext->transformed_tensors();
          if (std::find(t.begin(), t.end(), name) != t.end()) value = ext->transform(layer, name, value);
        }
        saved_.emplace_back(slot, *slot);
        *slot = value;
      }
    } catch (...) {
      restore();
      throw;
    }
  }
  ~Substitution() { restore(); }
  Substitution(const Substitution&) = delete;
  Substitution& operator=(const Substitution&) = delete;

 private:
  void restore() {
    for (auto& [slot, original] : saved_) *slot = original;
    saved_.clear();
  }
  std::vector<std::pair<torch::Tensor*, torch::Tensor>> saved_;
};

torch::Tensor run_from(torch::nn::Module& layer, const Extensions& chain, size_t k, const std::vector<torch::Tensor>& in,
                       const Forward& inner) {
  if (k == chain.size()) {
    Substitution substitution(layer, chain);
    return inner(in);
  }
  return chain[k]->forward(layer, in, [&layer, &chain, k, &inner](const std::vector<torch::Tensor>& x) {
    return run_from(layer, chain, k + 1, x, inner);
  });
}

}  // namespace

torch::Tensor ExtensionImpl::forward(torch::nn::Module&, const std::vector<torch::Tensor>& inputs, const Forward& next) {
  return next(inputs);
}

torch::Tensor ExtensionImpl::transform(torch::nn::Module&, const std::string&, const torch::Tensor& value) { return value; }

void install(torch::nn::Module& layer, const std::string& name, std::shared_ptr<ExtensionImpl> extension, bool first) {
  TORCH_CHECK_VALUE(extension, "nn::install: the extension for ", layer.name(), " \"", name,
                    "\" is null. Fix: pass std::make_shared<YourExtension>(...)");
  TORCH_CHECK_VALUE(!name.empty() && name.find('.') == std::string::npos, "nn::install: \"", name,
                    "\" is not a valid extension name. Fix: use a submodule name without dots, e.g. weight_fake_quant");
  const auto children = layer.named_children();
  if (const auto* taken = children.find(name)) {
    const bool extension_there = std::dynamic_pointer_cast<ExtensionImpl>(*taken) != nullptr;
    TORCH_CHECK_VALUE(false, "nn::install: ", layer.name(), " already has ",
                      extension_there ? "an extension" : "a submodule", " named \"", name, "\"; nothing was changed. Fix: ",
                      extension_there ? "remove it first (nn::remove), or install under another name"
                                      : "install the extension under another name");
  }
  for (const auto& [other, child] : extensions(layer)) {
    TORCH_CHECK_VALUE(child != extension, "nn::install: this extension is already installed on ", layer.name(),
                      " as \"", other, "\"; nothing was changed. Fix: make a new extension for each place");
  }
  extension->transformed_ = extension->transformed();
  for (const auto& tensor : extension->transformed_) {
    TORCH_CHECK_VALUE(member_slot(layer, tensor) != nullptr, "nn::install: extension \"", name, "\" transforms '",
                      tensor, "', which a ", layer.name(),
                      " cannot take in place of its own; nothing was changed. Fix: install it on a Conv1d/2d/3d, "
                      "ConvTranspose1d/2d/3d or Linear (weight, bias), or act in forward() instead");
  }
  // Submodules keep their registration order, so going first means registering the others again after.
  const auto later = first ? extensions(layer) : std::vector<std::pair<std::string, std::shared_ptr<ExtensionImpl>>>{};
  for (const auto& [n, e] : later) layer.unregister_module(n);
  layer.register_module(name, std::move(extension));
  for (const auto& [n, e] : later) layer.register_module(n, e);
  installed_count().fetch_add(1, std::memory_order_release);
}

void remove(torch::nn::Module& layer, const std::string& name) {
  if (!extension(layer, name)) {
    std::string installed;
    for (const auto& [n, e] : extensions(layer)) installed += (installed.empty() ? "" : ", ") + n;
    TORCH_CHECK_VALUE(false, "nn::remove: ", layer.name(), " has no extension named \"", name,
                      "\" (installed: ", installed.empty() ? "none" : installed,
                      "); nothing was changed. Fix: remove an installed name");
  }
  layer.unregister_module(name);
  installed_count().fetch_sub(1, std::memory_order_release);
}

std::vector<std::pair<std::string, std::shared_ptr<ExtensionImpl>>> extensions(const torch::nn::Module& layer) {
  std::vector<std::pair<std::string, std::shared_ptr<ExtensionImpl>>> out;
  for (const auto& child : layer.named_children()) {
    if (auto ext = std::dynamic_pointer_cast<ExtensionImpl>(child.value())) out.emplace_back(child.key(), std::move(ext));
  }
  return out;
}

std::shared_ptr<ExtensionImpl> extension(const torch::nn::Module& layer, const std::string& name) {
  const auto children = layer.named_children();
  const auto* found = children.find(name);
  return found ? std::dynamic_pointer_cast<ExtensionImpl>(*found) : nullptr;
}

bool has_extensions(const torch::nn::Module& layer) {
  if (!detail::extensions_installed()) return false;
  const auto children = layer.children();
  return std::any_of(children.begin(), children.end(),
                     [](const auto& child) { return dynamic_cast<const ExtensionImpl*>(child.get()) != nullptr; });
}

namespace detail {

bool extensions_installed() { return installed_count().load(std::memory_order_relaxed) > 0; }

torch::Tensor run_extended(torch::nn::Module& layer, const std::vector<torch::Tensor>& inputs, const Forward& inner) {
  const Extensions chain = chain_of(layer);
  if (chain.empty()) return inner(inputs);
  return run_from(layer, chain, 0, inputs, inner);
}

}  // namespace detail

}  // namespace libprune::nn
