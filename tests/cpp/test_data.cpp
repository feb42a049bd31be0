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

  // Damaged header sizes (the fuzzer found their product overflowing, tests/fuzz): 2 images of
  // 2^31-1 x 2^31-1 pixels in a file without pixels, and 2 images of -1 x -8 in one with 16 bytes
  // of pixels, whose product matches. Refused, naming the file, before anything is multiplied.
  auto be32 = [](uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16 & 255), char(v >> 8 & 255), char(v & 255)};
  };
  for (const auto& [rows, cols] : std::vector<std::pair<uint32_t, uint32_t>>{{0x7FFFFFFF, 0x7FFFFFFF},
                                                                             {0xFFFFFFFF, 0xFFFFFFF8}}) {
    const std::string pixels(rows == 0xFFFFFFFF ? 16 : 0, '\7');
    std::ofstream(dir.file("t10k-images-idx3-ubyte"), std::ios::binary)
        << be32(2051) + be32(2) + be32(rows) + be32(cols) + pixels;
    std::ofstream(dir.file("t10k-labels-idx1-ubyte"), std::ios::binary) << be32(2049) + be32(2) + "\1\2";
    msg = test::message_of([&] { data::read_mnist(dir.path.string(), data::Split::Test); });
    CHECK_THAT(msg, Catch::Contains("t10k-images") || Catch::Contains("t10k' IDX"));
    CHECK_THAT(msg, Catch::Contains("header is damaged"));
  }
}

TEST_CASE("TensorDataset: pad-crop and flip move whole images, eval batches are exact copies", "[data]") {
  const auto images = torch::arange(6 * 2 * 5 * 4, torch::kFloat).reshape({6, 2, 5, 4});
  const auto labels = torch::arange(6, torch::kLong);
  data::TensorDataset set(images, labels, 6, /*flip=*/true, /*pad_crop=*/1);
  const std::vector<int64_t> idx{5, 0, 3, 3, 1, 2};
  const auto eval = set.get(idx, false, 7);
  CHECK(torch::equal(eval.x(), images.index_select(0, torch::tensor(idx))));
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
            if (torch::equal(b.x()[static_cast<int64_t>(i)], mirror ? crop.flip({2}) : crop)) {
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
  CHECK(torch::equal(set.get(idx, true, 3).x(), set.get(idx, true, 3).x()));
}

TEST_CASE("TensorDataset: wrong dtypes and indices out of range are errors", "[data]") {
  CHECK_THROWS_WITH(data::TensorDataset(torch::zeros({2, 1, 4, 4}, torch::kByte), torch::zeros({2}, torch::kLong), 2),
                    Catch::Contains("float32") && Catch::Contains("Fix:"));
  data::TensorDataset set(torch::zeros({2, 1, 4, 4}), torch::zeros({2}, torch::kLong), 2);
  CHECK_THROWS_WITH(set.get({0, 2}, false), Catch::Contains("index 2 is outside [0, 2)"));
}

namespace {

// A bag-of-embeddings text classifier: token ids and an attention mask in, logits out.
struct TextNetImpl : models::ModelImpl {
  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear hidden{nullptr}, out{nullptr};
  TextNetImpl(int64_t vocab, int64_t classes) {
    embed = register_module("embed", torch::nn::Embedding(vocab, 16));
    hidden = register_module("hidden", torch::nn::Linear(16, 32));
    out = register_module("out", torch::nn::Linear(32, classes));
  }
  torch::Tensor forward(torch::Tensor ids) override {
    return forward_inputs({{"input_ids", ids}, {"attention_mask", torch::ones_like(ids)}});
  }
  torch::Tensor forward_inputs(const nn::Inputs& in) override {
    const auto mask = in.at("attention_mask").unsqueeze(-1).to(torch::kFloat);
    const auto pooled = (embed(in.at("input_ids")) * mask).sum(1) / mask.sum(1).clamp_min(1);
    return out(torch::relu(hidden(pooled)));
  }
};
TORCH_MODULE(TextNet);

// Sentences of 3 to 12 tokens padded to 12 (id 0, mask 0); the label says whether token 1 occurs.
std::shared_ptr<data::NamedTensorDataset> sentences(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto ids = torch::randint(2, 50, {n, 12}, torch::kLong);
  auto mask = torch::zeros({n, 12}, torch::kLong);
  auto labels = torch::randint(0, 2, {n}, torch::kLong);
  const auto lengths = torch::randint(3, 13, {n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = lengths[i].item<int64_t>();
    mask[i].narrow(0, 0, len).fill_(1);
    ids[i].narrow(0, len, 12 - len).fill_(0);
    if (labels[i].item<int64_t>() == 1) ids[i][torch::randint(0, len, {1}).item<int64_t>()] = 1;
  }
  return std::make_shared<data::NamedTensorDataset>(nn::Inputs{{"input_ids", ids}, {"attention_mask", mask}}, labels, 2);
}

}  // namespace

TEST_CASE("text batches: token ids and a mask through the loader, Trainer, op counts, latency and pruning", "[data]") {
  auto train = sentences(512, 1), eval = sentences(128, 2);
  data::Loader loader(*train, 32, true, 0);
  loader.start(0);
  data::Batch b;
  REQUIRE(loader.next(b));
  CHECK(b.inputs.at("input_ids").scalar_type() == torch::kLong);
  CHECK(b.inputs.at("attention_mask").sizes() == torch::IntArrayRef({32, 12}));
  CHECK(b.y.sizes() == torch::IntArrayRef({32}));

  torch::manual_seed(0);
  TextNet model(50, 2);
  train::Trainer trainer(model.ptr(), train, eval,
                         train::TrainOptions().epochs(6).batch_size(32).optimizer(train::Optimizer::AdamW).lr(0.01)
                             .threads(1).progress(false));
  REQUIRE(trainer.fit());
  CHECK(trainer.history().back().top1 > 90.0);  // learnt: the task is not guessable (half the labels are 1)
  const auto example = trainer.example(4);
  CHECK(example.at("input_ids").scalar_type() == torch::kLong);  // channels_last leaves token ids alone
  const auto ops = measure::count_ops(model, example);
  CHECK(ops.macs == 4 * (16 * 32 + 32 * 2));
  CHECK(measure::measure_latency(model, example, measure::LatencyOptions().warmup(1).runs(2)).batch == 4);

  prune::Pruner pruner(model.ptr(), [&] { return std::vector<torch::Tensor>{model->forward_inputs(example)}; },
                       prune::PrunerOptions().ratio(0.5).ignored_layers({"out"}));
  pruner.step(&trainer.optimizer());
  CHECK(model->hidden->weight.size(0) == 16);
  CHECK(model->out->options.in_features() == 16);
  const auto after = trainer.evaluate();
  CHECK(after.top1 > 50.0);  // still a working classifier
  // The confusion matrix counts every eval example once, its diagonal is top-1.
  REQUIRE(after.confusion.sizes() == torch::IntArrayRef({2, 2}));
  CHECK(after.confusion.sum().item<int64_t>() == eval->size());
  CHECK(100.0 * static_cast<double>(after.confusion.trace().item<int64_t>()) / static_cast<double>(eval->size()) ==
        Approx(after.top1));
  CHECK(after.macro_f1 == Approx(train::macro_f1(after.confusion)));
  CHECK(trainer.last_evaluation().confusion.sum().item<int64_t>() == eval->size());

  // Bad input: a tensor with the wrong number of rows, and an input the model reads but is not there.
  CHECK_THAT(test::message_of([] {
               data::NamedTensorDataset({{"input_ids", torch::zeros({3, 4}, torch::kLong)}}, torch::zeros({2}, torch::kLong), 2);
             }),
             Catch::Contains("\"input_ids\" must have one row per label (2)"));
  CHECK_THAT(test::message_of([&] { model->forward_inputs({{"input_ids", example.at("input_ids")}}); }),
             Catch::Contains("the inputs have no \"attention_mask\"") && Catch::Contains("input_ids [4, 12] (Long)"));
}
