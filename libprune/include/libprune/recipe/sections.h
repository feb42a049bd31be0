#pragma once
// The recipe-only sections, defined once like every option list (libprune/options.h): the model,
// the data, and a pruning stage's extras. The other sections are the library's own options:
// `training` is train::TrainOptions, `report` is report::ReportOptions, and each `pruning` stage is
// prune::PrunerOptions with its schedule (schedule::ScheduleOptions) under `schedule`.
#include "libprune/options.h"
#include "libprune/quant/quantize.h"

#include <string>
#include <vector>

namespace libprune::recipe {

enum class DataKind { FashionMnist, Mnist, Cifar10, Cifar100, ImageFolder, Synthetic, Wordnet, TextTsv };
enum class QuantMode { None, Ptq, Qat };

// X("key", type, field, default, check, "meaning")
#define LIBPRUNE_MODEL_SECTION(X)                                                                                      \
  X("name", std::string, name, "cifar_resnet20", (::libprune::options::check::OneOf{::libprune::recipe::model_names,    \
                                                                                     "model"}),                         \
    "a zoo model (libprune.model_names())")                                                                            \
  X("num_classes", int64_t, num_classes, 0, ::libprune::options::check::at_least<int64_t>(0, "0 takes the dataset's"), \
    "0: the dataset's class count")                                                                                     \
  X("in_channels", int64_t, in_channels, 0, ::libprune::options::check::at_least<int64_t>(0, "0 takes the dataset's"), \
    "0: the dataset's channels")                                                                                        \
  X("weights", std::string, weights, "", nullptr, "a state_dict file (torch.save(dict(m.state_dict()))) to start from")

#define LIBPRUNE_DATA_SECTION(X)                                                                                       \
  X("kind", ::libprune::recipe::DataKind, kind, ::libprune::recipe::DataKind::FashionMnist, nullptr,                   \
    "fashion_mnist, mnist, cifar10, cifar100, image_folder, synthetic; text: wordnet (WordNet's nouns, 26 "          \
    "supersenses), text_tsv (your own text<TAB>label files)")                                                          \
  X("path", std::string, path, "", nullptr,                                                                             \
    "dataset folder (text_tsv: the folder of train_file and eval_file); empty for (Fashion-)MNIST: Debian's "          \
    "/usr/share/datasets/fashion-mnist; wordnet: the data.noun file, empty for Debian's")                             \
  X("train_dir", std::string, train_dir, "train", nullptr, "image_folder: the training split under path")             \
  X("val_dir", std::string, val_dir, "val", nullptr, "image_folder: the evaluation split under path")                 \
  X("crop", int64_t, crop, 224, ::libprune::options::check::at_least<int64_t>(1, "e.g. 224"),                          \
    "image_folder: RandomResizedCrop(crop) for training, CenterCrop(crop) for eval")                                   \
  X("resize", int64_t, resize, 256, ::libprune::options::check::at_least<int64_t>(1, "e.g. 256"),                      \
    "image_folder: Resize(resize) before the eval crop")                                                                \
  X("min_scale", double, min_scale, 0.08, ::libprune::options::check::in_range(0, true, 1, false, "e.g. 0.08"),         \
    "image_folder: RandomResizedCrop's smallest area fraction")                                                         \
  X("skip_unreadable", bool, skip_unreadable, true, nullptr,                                                            \
    "image_folder: skip (and count) unreadable images, or stop with an error naming the file")                          \
  X("threads", int, threads, 2, ::libprune::options::check::at_least<int>(1, "e.g. 2"),                                \
    "image_folder: decoding threads per batch (the next batch loads while one trains)")                                \
  X("flip", bool, flip, false, nullptr, "in-memory sets: random horizontal flips when training")                       \
  X("pad_crop", int64_t, pad_crop, 0, ::libprune::options::check::at_least<int64_t>(0, "e.g. 4"),                       \
    "in-memory sets: pad by N pixels and crop back at random when training")                                           \
  X("limit_train", int64_t, limit_train, 0, ::libprune::options::check::at_least<int64_t>(0, "0 uses all"),             \
    "use only the first N training examples (text: N spread evenly over the file; 0: all)")                                                                  \
  X("limit_eval", int64_t, limit_eval, 0, ::libprune::options::check::at_least<int64_t>(0, "0 uses all"),               \
    "use only the first N evaluation examples (text: N spread evenly; 0: all)")                                                                \
  X("synthetic_size", int64_t, synthetic_size, 32, ::libprune::options::check::at_least<int64_t>(1, "e.g. 32"),        \
    "synthetic: image side")                                                                                           \
  X("synthetic_channels", int64_t, synthetic_channels, 3, ::libprune::options::check::at_least<int64_t>(1, "e.g. 3"),  \
    "synthetic: image channels")                                                                                        \
  X("synthetic_classes", int64_t, synthetic_classes, 10, ::libprune::options::check::at_least<int64_t>(2, "e.g. 10"),  \
    "synthetic: classes (random images whose class shifts their mean)")                                                \
  X("train_file", std::string, train_file, "train.tsv", nullptr, "text_tsv: the training file under path")             \
  X("eval_file", std::string, eval_file, "test.tsv", nullptr, "text_tsv: the evaluation file under path")              \
  X("eval_split", std::string, eval_split, "test",                                                                     \
    (::libprune::options::check::OneOf{[] { return std::vector<std::string>{"test", "validation"}; }, "eval_split"}),  \
    "wordnet: the split evaluated (offset % 10 == 0: test, == 1: validation)")                                          \
  X("max_length", int64_t, max_length, 64, ::libprune::options::check::at_least<int64_t>(3, "e.g. 64"),                \
    "text: tokens per example, [CLS] and [SEP] included; longer texts are cut and counted")                            \
  X("vocab_size", int64_t, vocab_size, 8000, ::libprune::options::check::at_least<int64_t>(8, "e.g. 8000"),            \
    "text: pieces of the SentencePiece model trained on the training split")                                           \
  X("tokenizer", std::string, tokenizer, "", nullptr,                                                                  \
    "text: a SentencePiece .model to use; empty trains one on the training split and saves it as "                    \
    "<output_dir>/tokenizer.model (reused when it is there)")

#define LIBPRUNE_STAGE_SECTION(X)                                                                                      \
  X("taylor_batches", int64_t, taylor_batches, 16, ::libprune::options::check::at_least<int64_t>(0, "e.g. 16"),        \
    "taylor and mask_grad: batches of gradients accumulated before each cut")

// The `quantization` section beside quant::QuantOptions (bits, observer, averaging_constant).
#define LIBPRUNE_QUANT_SECTION(X)                                                                                      \
  X("mode", ::libprune::recipe::QuantMode, mode, ::libprune::recipe::QuantMode::None, nullptr,                          \
    "none; ptq: calibrate the trained model and convert it to int8; qat: train with fake quantisers from start_epoch, " \
    "then convert")                                                                                                     \
  X("start_epoch", int64_t, start_epoch, 0, ::libprune::options::check::at_least<int64_t>(0, "e.g. the epoch after the " \
                                                                                              "last cut"),              \
    "qat: the epoch the fake quantisers go in; at or after every pruning stage's last cut (prune, then quantize)")      \
  X("freeze_observers_epoch", int64_t, freeze_observers_epoch, -1,                                                      \
    ::libprune::options::check::at_least<int64_t>(-1, "-1 never freezes"),                                             \
    "qat: from this epoch (after start_epoch) the quantisers' ranges stay fixed and learnable_scales learn (-1: never)") \
  X("freeze_bn_epoch", int64_t, freeze_bn_epoch, -1, ::libprune::options::check::at_least<int64_t>(-1, "-1 never freezes"),\
    "qat: from this epoch batch norms normalise with their running statistics and stop updating them (-1: never)")     \
  X("calibration_observer", ::libprune::quant::Observer, calibration_observer, ::libprune::quant::Observer::min_max,    \
    nullptr, "ptq: how calibration turns what it saw into ranges: min_max, percentile (`percentile` clips outliers) " \
    "or mse (clips where that lowers the rounding error)") \
  X("calibration_batches", int64_t, calibration_batches, 16,                                                            \
    ::libprune::options::check::at_least<int64_t>(1, "e.g. 16"),                                                        \
    "ptq: training batches (in file order, no augmentation) the observers see before convert")                         \
  X("engine", std::string, engine, "onednn",                                                                            \
    (::libprune::options::check::OneOf{[] { return std::vector<std::string>{"onednn", "qnnpack"}; }, "engine"}),        \
    "int8 kernels: onednn (x86) or qnnpack (ARM); it must be built into LibTorch")                                     \
  X("compare", bool, compare, true, nullptr,                                                                            \
    "also report the dense model and the pruned model each converted by PTQ (the int8 row and a PTQ row)")            \
  X("simulate_bits", int64_t, simulate_bits, 0, ::libprune::options::check::at_least<int64_t>(0, "0 (off) or 2 to 7"), \
    "qat: also report a simulated low-bit row (e.g. 4): the QAT model trained on at these bits for simulate_epochs "    \
    "and evaluated fake-quantised (no kernels convert below 8 bits; accuracy only)")                                   \
  X("simulate_epochs", int64_t, simulate_epochs, 1, ::libprune::options::check::at_least<int64_t>(1, "e.g. 1"),        \
    "qat: epochs of low-bit QAT for the simulate_bits row, starting from the 8-bit QAT weights")                        \
  X("keep_float_worst", int64_t, keep_float_worst, 0, ::libprune::options::check::at_least<int64_t>(0, "e.g. 3"),       \
    "ptq: mixed precision chosen by the quantization scan: the final model's PTQ keeps float, beside keep_float, the " \
    "N units the scan ranks worst at 8 bits (needs 8 in report.quant_sensitivity_bits; report.quant_sensitivity_metric " \
    "agreement ranks finest); 0: none")

std::vector<std::string> model_names();

struct ModelSection {
  ModelSection() = default;
  LIBPRUNE_MODEL_SECTION(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<ModelSection>>& specs();
};

struct DataSection {
  DataSection() = default;
  LIBPRUNE_DATA_SECTION(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<DataSection>>& specs();
};

// A pruning stage's keys beside the pruner's options and its schedule.
struct StageSection {
  StageSection() = default;
  LIBPRUNE_STAGE_SECTION(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<StageSection>>& specs();
};

// The recipe's `quantization` section: quant::QuantOptions and these keys.
struct QuantSection {
  QuantSection() = default;
  LIBPRUNE_QUANT_SECTION(LIBPRUNE_OPTION_FIELD)
 public:
  static const std::vector<options::Spec<QuantSection>>& specs();
};

}  // namespace libprune::recipe

namespace libprune::options {
template <>
struct EnumNames<recipe::QuantMode> {
  static constexpr const char* what = "quantization.mode";
  static constexpr const char* names[] = {"none", "ptq", "qat"};
};
template <>
struct EnumNames<recipe::DataKind> {
  static constexpr const char* what = "data.kind";
  static constexpr const char* names[] = {"fashion_mnist", "mnist",     "cifar10", "cifar100",
                                          "image_folder",  "synthetic", "wordnet", "text_tsv"};
};
}  // namespace libprune::options
