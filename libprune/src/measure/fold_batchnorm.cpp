#include "libprune/measure/fold_batchnorm.h"

#include "libprune/graph/op_rules.h"
#include "libprune/nn/batchnorm_fold.h"
#include "libprune/nn/eval_mode.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <sstream>

namespace libprune::measure {
namespace {

bool is_conv_module(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::Conv1dImpl*>(&m) || dynamic_cast<const torch::nn::Conv2dImpl*>(&m) ||
         dynamic_cast<const torch::nn::Conv3dImpl*>(&m);
}

// "layer1.0.bn1.weight" -> "layer1.0.bn1"; empty when the node does not carry a named `.weight`
// (seen through extensions' transforms, so a fake-quantised conv still folds).
std::string module_of_weight(const graph::Trace& trace, int node) {
  return node < 0 ? std::string() : graph::module_of_weight(trace.parameter_source(node));
}

}  // namespace

struct BatchNormFolding::Installed {
  FoldedPair names;
  std::shared_ptr<torch::nn::Module> conv, norm;
  std::shared_ptr<nn::FoldedBatchNormImpl> fold;
  std::shared_ptr<nn::FoldedIntoConvImpl> pass;
  bool active = false;
};

namespace {

// Counts the readers of every node's output (the model's outputs count as readers too).
std::vector<int> readers_of(const graph::Trace& trace) {
  std::vector<int> readers(trace.nodes().size(), 0);
  for (const auto& n : trace.nodes()) {
    for (int in : n.inputs) {
      if (in >= 0) ++readers[static_cast<size_t>(in)];
    }
  }
  for (int out : trace.outputs()) {
    if (out >= 0) ++readers[static_cast<size_t>(out)];
  }
  return readers;
}

// Why the pair (conv node `c`, norm node `n`) cannot fold, or "" when it can.
std::string unfoldable(const graph::TracedNode& c, int readers, const std::string& conv_name, const std::string& norm_name,
                       const std::map<std::string, std::shared_ptr<torch::nn::Module>>& modules) {
  if (norm_name.empty() || !modules.count(norm_name)) {
    return "it has no named affine weight (affine=false), so there is nothing to read its scale from";
  }
  if (conv_name.empty() || !modules.count(conv_name)) return "the convolution before it has no named weight parameter";
  if (c.attr("transposed") != 0) return "the convolution before it is transposed";
  if (readers != 1) return "the output of '" + conv_name + "' is also read elsewhere, so it must stay unnormalised";
  if (!is_conv_module(*modules.at(conv_name))) {
    return "'" + conv_name + "' is not a torch::nn::Conv1d/2d/3d, so its forward may do more than convolve";
  }
  if (!nn::is_batch_norm(*modules.at(norm_name))) return "'" + norm_name + "' is not a torch::nn::BatchNorm1d/2d/3d";
  if (!nn::tracks_running_stats(*modules.at(norm_name))) {
    return "it does not track running statistics, so in eval mode it normalises by the batch";
  }
  if (nn::extension(*modules.at(conv_name), nn::kFoldedBatchNorm)) {
    return "'" + conv_name + "' is already folded (another BatchNormFolding is alive)";
  }
  return {};
}

bool same_outputs(const std::vector<torch::Tensor>& out, const std::vector<torch::Tensor>& reference) {
  bool same = out.size() == reference.size();
  for (size_t i = 0; same && i < out.size(); ++i) {
    const auto& r = reference[i];
    if (!r.defined() || !r.is_floating_point()) continue;
    // A diverged model's output may hold NaN or inf: compare where it is finite (and NaN to NaN).
    const auto finite = r.isfinite();
    const double scale = finite.any().item<bool>() ? r.masked_select(finite).abs().max().item<double>() : 1.0;
    same = out[i].sizes() == r.sizes() && torch::allclose(out[i], r, 1e-3, 1e-4 * std::max(scale, 1.0), true);
  }
  return same;
}

}  // namespace

BatchNormFolding::BatchNormFolding(torch::nn::Module& model, const graph::Forward& forward) {
  const auto trace = graph::Trace::capture(model, forward);
  const auto& nodes = trace.nodes();
  const auto readers = readers_of(trace);
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules;
  for (const auto& item : model.named_modules("", false)) modules[item.key()] = item.value();

  for (const auto& n : nodes) {
    if (!graph::is_batch_norm_op(n.op) || n.inputs.empty() || n.inputs[0] < 0) continue;
    const auto& c = nodes[static_cast<size_t>(n.inputs[0])];
    if (c.kind != graph::OpKind::Conv) continue;
    const std::string norm_name = module_of_weight(trace, n.inputs.size() > 1 ? n.inputs[1] : -1);
    const std::string conv_name = module_of_weight(trace, c.inputs.size() > 1 ? c.inputs[1] : -1);
    const std::string why = unfoldable(c, readers[static_cast<size_t>(n.inputs[0])], conv_name, norm_name, modules);
    if (!why.empty()) {
      skipped_.push_back((norm_name.empty() ? "a batch norm after '" + conv_name + "'" : norm_name) + ": " + why);
      continue;
    }
    auto p = std::make_shared<Installed>();
    p->names = {conv_name, norm_name};
    p->conv = modules.at(conv_name);
    p->norm = modules.at(norm_name);
    p->fold = std::make_shared<nn::FoldedBatchNormImpl>(p->norm);
    p->pass = std::make_shared<nn::FoldedIntoConvImpl>(p->conv);
    installed_.push_back(p);
  }
  if (installed_.empty()) return;

  try {
    install_and_check(model, forward);
  } catch (...) {
    for (auto& p : installed_) remove(*p);
    throw;
  }
}

void BatchNormFolding::install_and_check(torch::nn::Module& model, const graph::Forward& forward) {
  nn::EvalModeGuard eval(model);
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> reference = forward();  // unfolded: nothing installed yet
  for (auto& p : installed_) {
    p->active = true;  // set first: remove() takes off whichever of the two is in place
    // First on the conv (fold, then any fake quantization); last on the norm (observers still see its output).
    nn::install(*p->conv, nn::kFoldedBatchNorm, p->fold, /*first=*/true);
    nn::install(*p->norm, nn::kFoldedIntoConv, p->pass);
  }
  // Both extensions of a pair must run on the example: a model that calls its modules directly
  // bypasses them. Such pairs are removed and listed, and the check repeats.
  std::vector<torch::Tensor> out;
  for (bool clean = false; !clean;) {
    for (auto& p : installed_) p->fold->calls = p->pass->calls = 0;
    out = forward();
    clean = true;
    for (auto& p : installed_) {
      if (!p->active || (p->fold->calls > 0 && p->pass->calls > 0)) continue;
      remove(*p);
      skipped_.push_back(p->names.norm + ": '" + (p->fold->calls == 0 ? p->names.conv : p->names.norm) +
                         "' is not called through libprune::nn::call (or a Chain), so an extension cannot act on it. "
                         "Fix: call it as libprune::nn::call(module, x) in the model's forward");
      clean = false;
    }
  }
  if (!same_outputs(out, reference)) {
    std::ostringstream names;
    for (auto& p : installed_) {
      if (p->active) names << " " << p->names.conv << "+" << p->names.norm;
    }
    TORCH_CHECK(false, "fold_batchnorm: the folded model's output differs from the unfolded one; nothing was folded "
                "(pairs tried:", names.str(), "). Fix: report the model; time it unfolded meanwhile");
  }
  for (auto& p : installed_) {
    if (p->active) folded_.push_back(p->names);
  }
}

// Takes off the pair's extensions that are still in place (the user may have removed one).
void BatchNormFolding::remove(Installed& p) {
  if (!p.active) return;
  const auto take_off = [](torch::nn::Module& layer, const char* name, const std::shared_ptr<nn::ExtensionImpl>& ours) {
    if (nn::extension(layer, name) == ours) nn::remove(layer, name);
  };
  take_off(*p.conv, nn::kFoldedBatchNorm, p.fold);
  take_off(*p.norm, nn::kFoldedIntoConv, p.pass);
  p.active = false;
}

BatchNormFolding::~BatchNormFolding() {
  for (auto& p : installed_) {
    try {
      remove(*p);
    } catch (...) {  // a destructor must not throw; what stays acts only in eval mode
    }
  }
}

}  // namespace libprune::measure
