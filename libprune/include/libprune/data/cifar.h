#pragma once
// CIFAR-10 and CIFAR-100 in their binary format: data_batch_{1..5}.bin / test_batch.bin (one label
// byte, then 3072 pixel bytes) and train.bin / test.bin (coarse and fine label bytes, then 3072).
#include "libprune/data/mnist.h"

#include <string>

namespace libprune::data {

// images uint8 [N, 3, 32, 32], labels int64 [N] (CIFAR-100: the fine labels). Throws naming the
// missing or malformed file and the fix.
MnistData read_cifar(const std::string& dir, Split split, int classes /* 10 or 100 */);

}  // namespace libprune::data
