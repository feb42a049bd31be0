#include "data.h"

#include "libprune/data/cifar.h"
#include "libprune/data/image_folder.h"
#include "libprune/data/mnist.h"
#include "libprune/data/text.h"
#include "libprune/data/tokenizer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <iostream>

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

// Keeps `limit` examples spread evenly over the corpus (0: all). WordNet's file is ordered by
// lexicographer file, so its first examples would be one or two classes.
data::TextCorpus spread(data::TextCorpus c, int64_t limit) {
  const size_t n = c.texts.size();
  if (limit <= 0 || static_cast<size_t>(limit) >= n) return c;
  data::TextCorpus out;
  out.label_names = c.label_names;
  for (size_t i = 0; i < static_cast<size_t>(limit); ++i) {
    const size_t k = i * n / static_cast<size_t>(limit);
    out.texts.push_back(std::move(c.texts[k]));
    out.labels.push_back(c.labels[k]);
  }
  return out;
}

// WordNet's nouns or a TSV pair, tokenized with the recipe's SentencePiece model (trained on the
// training split when none is given, and saved in the run folder so a resume reuses it).
Datasets text(const DataSection& d, const std::string& output_dir) {
  namespace fs = std::filesystem;
  data::TextCorpus train, eval;
  if (d.kind() == DataKind::Wordnet) {
    const std::string path = d.path().empty() ? std::string(data::kWordNetNouns) : d.path();
    train = data::read_wordnet_nouns(path, data::TextSplit::Train);
    eval = data::read_wordnet_nouns(path, d.eval_split() == "test" ? data::TextSplit::Test : data::TextSplit::Validation);
  } else {
    TORCH_CHECK_VALUE(!d.path().empty(), "data.path is empty for text_tsv. Fix: --set data.path=<folder with ",
                      d.train_file(), " and ", d.eval_file(), ">");
    train = data::read_text_tsv((fs::path(d.path()) / d.train_file()).string());
    eval = data::read_text_tsv((fs::path(d.path()) / d.eval_file()).string(), train.label_names);
  }
  train = spread(std::move(train), d.limit_train());
  eval = spread(std::move(eval), d.limit_eval());
  std::string model = d.tokenizer();
  if (model.empty()) {
    model = (fs::path(output_dir) / "tokenizer.model").string();
    if (!fs::exists(model)) data::Tokenizer::train(train.texts, model, d.vocab_size());
  }
  const data::Tokenizer tokenizer(model);
  int64_t cut = 0;
  Datasets out{data::tokenize(train, tokenizer, d.max_length(), &cut), data::tokenize(eval, tokenizer, d.max_length(), &cut),
               1, tokenizer.vocab_size(), model};
  if (cut > 0) std::cout << "data: " << cut << " texts longer than max_length " << d.max_length() << " were cut\n";
  return out;
}

}  // namespace

Datasets make_data(const DataSection& d, const std::string& output_dir) {
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
    case DataKind::Wordnet:
    case DataKind::TextTsv: return text(d, output_dir);
  }
  return {};
}

}  // namespace libprune::recipe::detail
