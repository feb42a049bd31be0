#pragma once
// Deploy-time batch-norm folding: every batch norm that reads a convolution's output (and nothing
// else reads that output) is folded into the convolution, as an inference runtime would do.
//
// The model's tensors are not edited. Folding installs a pair of forward extensions
// (nn/batchnorm_fold.h): the conv runs its own forward with the folded weight and bias, and the
// batch norm passes its input through. They are removed when the BatchNormFolding is destroyed, and
// they hold no state, so state_dict, checkpoints and pruning see the model as it was. They only act
// in eval mode; in training mode both modules run as they are, so a folding left in place never
// changes training.
//
// Pairs are found from one traced forward pass, then each is checked on the example: the conv and
// the batch norm must be called through libprune::nn::call (or a Chain / call_sequential), which the
// zoo models do. A pair whose modules are called directly is left unfolded and listed in skipped()
// with the reason, and the folded model's output is compared with the unfolded one before the
// constructor returns.
#include "libprune/graph/trace.h"

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace libprune::measure {

struct FoldedPair {
  std::string conv;  // module names, e.g. "layer1.0.conv1"
  std::string norm;  // e.g. "layer1.0.bn1"
};

class BatchNormFolding {
 public:
  // `forward` runs the model once on example inputs (as for graph::Trace); it is called three times:
  // the trace, the unfolded reference, and the folded check.
  BatchNormFolding(torch::nn::Module& model, const graph::Forward& forward);
  ~BatchNormFolding();
  BatchNormFolding(const BatchNormFolding&) = delete;
  BatchNormFolding& operator=(const BatchNormFolding&) = delete;

  const std::vector<FoldedPair>& folded() const { return folded_; }
  // "layer1.0.bn1: <reason>" for each batch norm that follows a conv but was not folded.
  const std::vector<std::string>& skipped() const { return skipped_; }

 private:
  struct Installed;
  // Installs every pair found and checks the result; the constructor removes them all if it throws.
  void install_and_check(torch::nn::Module& model, const graph::Forward& forward);
  static void remove(Installed& pair);

  std::vector<FoldedPair> folded_;
  std::vector<std::string> skipped_;
  std::vector<std::shared_ptr<Installed>> installed_;
};

}  // namespace libprune::measure
