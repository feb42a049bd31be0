#include "libprune/models/model.h"

#include "libprune/nn/call.h"

namespace libprune::models {

torch::Tensor FeaturesClassifierImpl::forward(torch::Tensor x) {
  x = nn::call_sequential(features, x);
  x = torch::adaptive_avg_pool2d(x, {pooled_, pooled_}).flatten(1);
  return nn::call_sequential(classifier, x);
}

void FeaturesClassifierImpl::register_features_and_classifier(torch::nn::Sequential f, torch::nn::Sequential c) {
  features = register_module("features", std::move(f));
  classifier = register_module("classifier", std::move(c));
}

}  // namespace libprune::models
