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

TEST_CASE("TensorDataset: pad-crop and flip move whole images, eval batches are exact copies", "[data]") {
  const auto images = torch::arange(6 * 2 * 5 * 4, torch::kFloat).reshape({6, 2, 5, 4});
  const auto labels = torch::arange(6, torch::kLong);
  data::TensorDataset set(images, labels, 6, /*flip=*/true, /*pad_crop=*/1);
  const std::vector<int64_t> idx{5, 0, 3, 3, 1, 2};
  const auto eval = set.get(idx, false, 7);
  CHECK(torch::equal(eval.x, images.index_select(0, torch::tensor(idx))));
  CHECK(torch::equal(eval.y, torch::tensor(idx)));
  // Every training image is one of the 18 candidates: a shift in [-1, 1]^2 with zero fill, flipped or not.
  int shifted = 0, flipped = 0;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const auto b = set.get(idx, true, seed);
    CHECK(torch::equal(b.y, torch::tensor(idx)));
    for (size_t i = 0; i < idx.size(); ++i) {
      const auto padded = torch::constant_pad_nd(images[idx[i]], {1, 1, 1, 1});
      bool found = false;
      for (int64_t oy = 0; oy <= 2 && !found; ++oy) {
        for (int64_t ox = 0; ox <= 2 && !found; ++ox) {
          const auto crop = padded.narrow(1, oy, 5).narrow(2, ox, 4);
          for (const bool mirror : {false, true}) {
            if (torch::equal(b.x[static_cast<int64_t>(i)], mirror ? crop.flip({2}) : crop)) {
              found = true;
              shifted += (oy != 1 || ox != 1);
              flipped += mirror;
              break;
            }
          }
        }
      }
      CHECK(found);
    }
  }
  CHECK(shifted > 0);
  CHECK(flipped > 0);
  // The same seed gives the same batch (a resumed run sees the same augmentation).
  CHECK(torch::equal(set.get(idx, true, 3).x, set.get(idx, true, 3).x));
}

TEST_CASE("TensorDataset: wrong dtypes and indices out of range are errors", "[data]") {
  CHECK_THROWS_WITH(data::TensorDataset(torch::zeros({2, 1, 4, 4}, torch::kByte), torch::zeros({2}, torch::kLong), 2),
                    Catch::Contains("float32") && Catch::Contains("Fix:"));
  data::TensorDataset set(torch::zeros({2, 1, 4, 4}), torch::zeros({2}, torch::kLong), 2);
  CHECK_THROWS_WITH(set.get({0, 2}, false), Catch::Contains("index 2 is outside [0, 2)"));
}
