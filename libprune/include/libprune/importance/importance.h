#pragma once
// Importance: one score per unit (channel, head) of a group, by a named criterion.
//
// Criteria live in one table: the built-ins (l1, l2, bn_scale, taylor, fpgm, lamp, random, mask_grad) and any a
// user registers, from C++ (register_criterion) or Python (libprune.register_importance). A recipe,
// PrunerOptions::importance and prune(importance=...) name them alike.
//
// The built-ins give a value per index of each member tensor; a unit sums its indices within a
// member, and the members' values reduce (sum, mean, max or first) to the unit's score.
#include "libprune/graph/dependency_graph.h"
#include "libprune/options.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace libprune::importance {

enum class Reduction { Sum, Mean, Max, First };

// Gradient statistics accumulated over batches, by parameter name: for taylor, |w * dL/dw| summed
// over batches (shaped like the parameter); for mask_grad, one row per batch of the signed sums of
// w * dL/dw along each index of dim 0 ("<name>@0", [batches, size(0)]) and of dim 1 ("<name>@1").
using Gradients = std::map<std::string, torch::Tensor>;

struct ImportanceOptions {
  ImportanceOptions(std::string criterion = "l1") : criterion_(std::move(criterion)) {}  // NOLINT: a name converts
  TORCH_ARG(std::string, criterion);
  TORCH_ARG(Reduction, reduction) = Reduction::Sum;
  // Divide a group's scores by their sum (so groups of different scale compare).
  TORCH_ARG(bool, normalize) = false;
  TORCH_ARG(uint64_t, seed) = 0;
};

// Per-index sums of a parameter's |w| or w^2 along dims 0 and 1, both made from one |w| (or w^2) and
// kept for one scoring pass over many groups: a weight is a member of two groups (its own outputs,
// and the inputs of the layer after). It holds the tensors it has seen; their values must not
// change while it lives.
class MagnitudeCache {
 public:
  // The sums along `dim` in float64 (one per index; a 1-D tensor's own values), or undefined when
  // `dim` is past 1 (or past 0 for a 1-D tensor).
  torch::Tensor per_index(const torch::Tensor& t, int64_t dim, bool squared);

 private:
  struct Entry {
    torch::Tensor source, along0, along1;
  };
  std::map<std::pair<const c10::TensorImpl*, bool>, Entry> entries_;
};

// What a criterion sees of one group.
struct GroupTensors {
  const graph::Group& group;
  // Per member (group.members[m]): the parameter's current value, or undefined for members that
  // never score (buffers such as running statistics, an extension's state).
  std::vector<torch::Tensor> tensors;
  const ImportanceOptions& options;
  const Gradients* accumulated = nullptr;  // Taylor: accumulated |w dL/dw|, or null to use each .grad
  MagnitudeCache* magnitudes = nullptr;     // shared by the groups of one scoring pass, or null
  // The sum over each unit's indices of `per_index` (values along member m's dim), one per unit.
  std::vector<double> per_unit(size_t member, const torch::Tensor& per_index) const;
};

// Returns one score per unit of the group (group.size() of them); a lower score goes first.
using Criterion = std::function<std::vector<double>(const GroupTensors&)>;

// Adds a criterion under `name`. Throws when the name is empty or taken (built-in or registered).
void register_criterion(const std::string& name, Criterion criterion);
// Removes a registered criterion (the built-ins stay); false when there was none.
bool unregister_criterion(const std::string& name);
// Every criterion's name, built-ins first.
std::vector<std::string> criteria();

// One score per unit of `group` by options.criterion(). A registered criterion's scores are checked:
// the wrong count or a non-finite score is an error naming the criterion, the group and the fix.
// Taylor uses `accumulated` where it holds the parameter, else the parameter's .grad; with neither
// it throws naming the parameter and the fix.
std::vector<double> score(const graph::Group& group, const std::map<std::string, torch::Tensor>& params,
                          const ImportanceOptions& options, const Gradients* accumulated = nullptr,
                          MagnitudeCache* magnitudes = nullptr);

// Adds |w * w.grad| of every parameter with a gradient to `into` (a Taylor accumulator).
void accumulate_taylor(const std::vector<std::pair<std::string, torch::Tensor>>& params, Gradients& into);
// Whether `criterion` reads gradients accumulated over batches (taylor, mask_grad).
bool accumulates(const std::string& criterion);
// Adds this batch's statistics for `criterion` (see Gradients) of every parameter with a gradient.
void accumulate(const std::string& criterion, const std::vector<std::pair<std::string, torch::Tensor>>& params,
                Gradients& into);
// mask_grad's statistic of one batch: the signed sum of w * dL/dw per index of `dim`, [size(dim)],
// float64 on the CPU (p must have a gradient).
torch::Tensor gate_sums(const torch::Tensor& p, int64_t dim);

}  // namespace libprune::importance

namespace libprune::options {
template <>
struct EnumNames<importance::Reduction> {
  static constexpr const char* what = "importance reduction";
  static constexpr const char* names[] = {"sum", "mean", "max", "first"};
};
}  // namespace libprune::options
