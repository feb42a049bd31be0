#pragma once
// MNIST and Fashion-MNIST in the IDX format, gzipped or not. Fashion-MNIST defaults to Debian's
// dataset-fashion-mnist install location.
#include <torch/torch.h>

#include <string>

namespace libprune::data {

inline const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

enum class Split { Train, Test };

struct MnistData {
  torch::Tensor images;  // uint8 [N, 28, 28]
  torch::Tensor labels;  // int64 [N]
};

// Reads <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. A missing directory or file, or
// a malformed one, throws an error naming the file and the fix.
MnistData read_mnist(const std::string& dir, Split split);

// Float images [N, 1, 28, 28] normalised with the given mean and std.
torch::Tensor normalize_images(const torch::Tensor& images_u8, double mean, double std);

}  // namespace libprune::data
