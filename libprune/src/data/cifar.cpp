#include "libprune/data/cifar.h"

#include "libprune/io/file.h"

#include <filesystem>

namespace libprune::data {

MnistData read_cifar(const std::string& dir, Split split, int classes) {
  TORCH_CHECK_VALUE(classes == 10 || classes == 100, "CIFAR has 10 or 100 classes, got ", classes);
  TORCH_CHECK_VALUE(std::filesystem::is_directory(dir), "CIFAR-", classes, " directory \"", dir,
                    "\" does not exist. Fix: set data.path to the folder holding the binary version's .bin files");
  std::vector<std::string> files;
  if (classes == 10) {
    if (split == Split::Train) {
      for (int i = 1; i <= 5; ++i) files.push_back("data_batch_" + std::to_string(i) + ".bin");
    } else {
      files.push_back("test_batch.bin");
    }
  } else {
    files.push_back(split == Split::Train ? "train.bin" : "test.bin");
  }
  const int64_t label_bytes = classes == 10 ? 1 : 2, record = label_bytes + 3072;
  std::vector<torch::Tensor> images, labels;
  for (const auto& f : files) {
    const std::string path = (std::filesystem::path(dir) / f).string();
    TORCH_CHECK_VALUE(std::filesystem::exists(path), "CIFAR-", classes, " file \"", path,
                      "\" is missing. Fix: download the binary version and unpack it into ", dir);
    auto bytes = io::read_file(path, "CIFAR file");
    const auto n = static_cast<int64_t>(bytes.size());
    TORCH_CHECK_VALUE(n > 0 && n % record == 0, "CIFAR file \"", path, "\" has ", n, " bytes, not a multiple of ",
                      record, " (one record). Fix: re-download it; it is truncated or not CIFAR-", classes);
    auto raw = torch::from_blob(bytes.data(), {n / record, record}, torch::kUInt8).clone();
    images.push_back(raw.narrow(1, label_bytes, 3072).reshape({-1, 3, 32, 32}));
    labels.push_back(raw.select(1, label_bytes - 1).to(torch::kLong));
  }
  MnistData out{torch::cat(images), torch::cat(labels)};
  TORCH_CHECK_VALUE(out.labels.max().item<int64_t>() < classes, "CIFAR file in \"", dir, "\" has labels >= ", classes,
                    ". Fix: set data.kind to cifar100 for CIFAR-100 files");
  return out;
}

}  // namespace libprune::data
