#include "helpers.h"
#include "libprune/libprune.h"

#include <fstream>

using namespace libprune;

TEST_CASE("Fashion-MNIST reads from Debian's dataset-fashion-mnist", "[data]") {
  const auto test_split = data::read_mnist(data::kFashionMnistDir, data::Split::Test);
  CHECK(test_split.images.sizes() == torch::IntArrayRef({10000, 28, 28}));
  CHECK(test_split.labels.sizes() == torch::IntArrayRef({10000}));
  CHECK(test_split.labels.min().item<int64_t>() == 0);
  CHECK(test_split.labels.max().item<int64_t>() == 9);
  // Balanced classes: 1000 test images each.
  CHECK(torch::bincount(test_split.labels).eq(1000).all().item<bool>());
  const auto x = data::normalize_images(test_split.images.slice(0, 0, 8), 0.5, 0.5);
  CHECK(x.sizes() == torch::IntArrayRef({8, 1, 28, 28}));
  CHECK(x.min().item<double>() >= -1.0);
  CHECK(x.max().item<double>() <= 1.0);
}

TEST_CASE("MNIST reader: missing folder, missing file, truncated and malformed files", "[data]") {
  test::TempDir dir("mnist_bad");
  auto msg = test::message_of([&] { data::read_mnist(dir.file("absent"), data::Split::Train); });
  CHECK_THAT(msg, Catch::Contains("absent") && Catch::Contains("does not exist") && Catch::Contains("Fix"));

  msg = test::message_of([&] { data::read_mnist(dir.path.string(), data::Split::Train); });
  CHECK_THAT(msg, Catch::Contains("train-images-idx3-ubyte"));

  // Truncated gzip.
  auto gz = io::read_file(std::string(data::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz", "test");
  std::ofstream(dir.file("t10k-labels-idx1-ubyte.gz"), std::ios::binary).write(gz.data(), 100);
  std::ofstream(dir.file("t10k-images-idx3-ubyte"), std::ios::binary) << "not an idx file at all......";
  msg = test::message_of([&] { data::read_mnist(dir.path.string(), data::Split::Test); });
  CHECK_THAT(msg, Catch::Contains("t10k-labels-idx1-ubyte.gz") && Catch::Contains("truncated or corrupt"));

  std::ofstream(dir.file("t10k-labels-idx1-ubyte"), std::ios::binary) << "plain but wrong";
  msg = test::message_of([&] { data::read_mnist(dir.path.string(), data::Split::Test); });
  CHECK_THAT(msg, Catch::Contains("bad magic"));
}
