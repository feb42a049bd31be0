#include "data.h"

#include "libprune/data/cifar.h"
#include "libprune/data/image_folder.h"
#include "libprune/data/mnist.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

namespace libprune::recipe::detail {
namespace {

// In-memory images, normalised, with the section's augmentation for training and its limit.
std::shared_ptr<data::Dataset> in_memory(const DataSection& d, const data::MnistData& m, double mean, double std,
                                         int64_t classes, bool train) {
  auto x = m.images.dim() == 3 ? data::normalize_images(m.images, mean, std)
                               : m.images.to(torch::kFloat32).div_(255.0).sub_(mean).div_(std);
  auto set = std::make_shared<data::TensorDataset>(x, m.labels, classes, train && d.flip(), train ? d.pad_crop() : 0);
  return data::limit(set, train ? d.limit_train() : d.limit_eval());
}

// Random images whose class shifts their mean: learnable, for quick runs and tests.
Datasets synthetic(const DataSection& d) {
  const int64_t s = d.synthetic_size(), c = d.synthetic_channels(), k = d.synthetic_classes();
  auto make = [&](int64_t n, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    auto y = torch::randint(0, k, {n}, gen, torch::kLong);
    auto x = torch::randn({n, c, s, s}, gen) + y.to(torch::kFloat32).view({-1, 1, 1, 1}) / static_cast<double>(k);
    return std::make_shared<data::TensorDataset>(x, y, k);
  };
  return {make(d.limit_train() > 0 ? d.limit_train() : 256, 1), make(d.limit_eval() > 0 ? d.limit_eval() : 128, 2), c};
}

}  // namespace

Datasets make_data(const DataSection& d) {
  namespace fs = std::filesystem;
  switch (d.kind()) {
    case DataKind::FashionMnist:
    case DataKind::Mnist: {
      const std::string dir = d.path().empty() ? std::string(data::kFashionMnistDir) : d.path();
      const bool mnist = d.kind() == DataKind::Mnist;
      const double mean = mnist ? 0.1307 : 0.2860, std = mnist ? 0.3081 : 0.3530;
      return {in_memory(d, data::read_mnist(dir, data::Split::Train), mean, std, 10, true),
              in_memory(d, data::read_mnist(dir, data::Split::Test), mean, std, 10, false), 1};
    }
    case DataKind::Cifar10:
    case DataKind::Cifar100: {
      const int classes = d.kind() == DataKind::Cifar10 ? 10 : 100;
      TORCH_CHECK_VALUE(!d.path().empty(), "data.path is empty for ", options::name_of(d.kind()),
                        ". Fix: --set data.path=/path/to/cifar-binary-folder");
      return {in_memory(d, data::read_cifar(d.path(), data::Split::Train, classes), 0.4734, 0.2516, classes, true),
              in_memory(d, data::read_cifar(d.path(), data::Split::Test, classes), 0.4734, 0.2516, classes, false), 3};
    }
    case DataKind::ImageFolder: {
      TORCH_CHECK_VALUE(!d.path().empty(), "data.path is empty for image_folder. Fix: --set data.path=/path/to/imagenet "
                        "(with train/ and val/ class folders)");
      auto opts = data::ImageFolderOptions()
                      .crop(d.crop())
                      .resize(d.resize())
                      .min_scale(d.min_scale())
                      .skip_unreadable(d.skip_unreadable())
                      .threads(d.threads());
      return {std::make_shared<data::ImageFolder>((fs::path(d.path()) / d.train_dir()).string(), opts),
              std::make_shared<data::ImageFolder>((fs::path(d.path()) / d.val_dir()).string(), opts), 3};
    }
    case DataKind::Synthetic: return synthetic(d);
  }
  return {};
}

}  // namespace libprune::recipe::detail
