#pragma once
#include "libprune/models/model.h"

#include <string>
#include <vector>

namespace libprune::models {

// Builds a zoo model by name ("resnet50", "cifar_resnet20", "mobilenet_v2", ...). An unknown
// name throws an error that lists every known name.
ModelPtr create(const std::string& name, const ModelOptions& options = {});

// The names create() knows, sorted.
std::vector<std::string> names();

}  // namespace libprune::models
