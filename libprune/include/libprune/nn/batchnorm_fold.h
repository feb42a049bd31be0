#pragma once
// Deploy-time batch-norm folding as a pair of forward extensions (nn/extension.h):
//   - on the convolution, FoldedBatchNorm replaces the weight and bias for each call with
//     w * gamma / sqrt(var + eps) and (b - mean) * gamma / sqrt(var + eps) + beta;
//   - on the batch norm, FoldedIntoConv passes the input through.
// Both act only while the conv and the batch norm are in eval mode, so a folding left installed
// never changes training. They hold no state of their own (the folded tensors are a cache, made
// again when the weight or the statistics change), so the model's state_dict is unchanged.
//
// measure::BatchNormFolding (measure/fold_batchnorm.h) finds the pairs from a trace, installs these
// and checks the result; use it rather than installing them by hand.
#include "libprune/nn/extension.h"

#include <atomic>
#include <memory>

namespace libprune::nn {

class FoldedBatchNormImpl : public ExtensionImpl {
 public:
  // `norm`: the BatchNorm1d/2d/3d whose output is the conv's only reader.
  explicit FoldedBatchNormImpl(std::shared_ptr<torch::nn::Module> norm);
  std::vector<std::string> transformed() const override { return {"weight", "bias"}; }
  torch::Tensor transform(torch::nn::Module& conv, const std::string& tensor, const torch::Tensor& value) override;
  // Calls seen since the last reset (placement checks count them on the example pass).
  std::atomic<int64_t> calls{0};

 private:
  // A tensor as the cache saw it (an alias of its storage, and its version).
  struct Seen {
    torch::Tensor alias;
    int64_t version = -1;
    static Seen of(const torch::Tensor& t);
    bool same(const torch::Tensor& now) const;
  };
  // A folded tensor and what it was made from: the incoming tensor, then the norm's weight, bias,
  // running mean and running variance.
  struct Cache {
    torch::Tensor out;
    std::vector<Seen> seen;
  };
  bool active(const torch::nn::Module& conv) const;
  std::weak_ptr<torch::nn::Module> norm_;
  Cache weight_cache_, bias_cache_;
};

class FoldedIntoConvImpl : public ExtensionImpl {
 public:
  explicit FoldedIntoConvImpl(std::shared_ptr<torch::nn::Module> conv);
  torch::Tensor forward(torch::nn::Module& norm, const std::vector<torch::Tensor>& inputs, const Forward& next) override;
  std::atomic<int64_t> calls{0};

 private:
  std::weak_ptr<torch::nn::Module> conv_;
};

// Whether `m` is a torch::nn::BatchNorm1d/2d/3d, and whether it is one that tracks running
// statistics (the only kind that folds: in eval mode it normalises by them, not by the batch).
bool is_batch_norm(const torch::nn::Module& m);
bool tracks_running_stats(const torch::nn::Module& m);

// What folding reads of a batch norm (weight and bias undefined without affine parameters), from a
// C++ module or, through the bindings, a Python one.
struct BatchNormTensors {
  torch::Tensor weight, bias, running_mean, running_var;
  double eps = 1e-5;
};

// A tracking batch norm's per-channel factor gamma / sqrt(running_var + eps) (1 / sqrt(...) without
// an affine weight): what folding scales the conv's weight by. Throws naming the module when it is
// not a BatchNorm1d/2d/3d with running statistics.
torch::Tensor batchnorm_factor(const torch::nn::Module& norm);
torch::Tensor batchnorm_factor(const BatchNormTensors& norm);
// A conv weight with output channel c (dim 0) scaled by factor[c], in the weight's memory format: the
// folded weight, given batchnorm_factor.
torch::Tensor scale_output_channels(const torch::Tensor& weight, const torch::Tensor& factor);
// The conv bias once `norm` is folded in: (bias - running_mean) * factor + beta; `bias` may be undefined.
torch::Tensor folded_bias(const torch::Tensor& bias, const torch::nn::Module& norm);
torch::Tensor folded_bias(const torch::Tensor& bias, const BatchNormTensors& norm);

// The names they are installed under.
constexpr const char* kFoldedBatchNorm = "folded_batchnorm";
constexpr const char* kFoldedIntoConv = "folded_into_conv";

}  // namespace libprune::nn
