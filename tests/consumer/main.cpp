// Proves an installed libprune is usable through find_package(libprune): build a zoo model and
// count its ops.
#include <libprune/libprune.h>

#include <iostream>

int main() {
  auto model = libprune::models::create("cifar_resnet20", libprune::models::ModelOptions().num_classes(10));
  const auto ops = libprune::measure::count_ops(model, torch::randn({1, 3, 32, 32}));
  std::cout << "libprune " << libprune::version() << " consumer: " << ops.params << " params, " << ops.macs
            << " MACs\n";
  return ops.params > 0 && ops.macs > 0 ? 0 : 1;
}
