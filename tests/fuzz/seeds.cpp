// The seed inputs each corpus started from: files libprune itself writes for the tiny model
// (checkpoints dense and pruned, a state_dict, plans), recipes with --set overrides, and small
// valid IDX and CIFAR files. Python-written seeds (torch.save, gzip) are made by make_seeds.py.
#include "fuzz.h"

#include "libprune/io/checkpoint.h"
#include "libprune/io/state_dict.h"
#include "libprune/prune/pruner.h"
#include "libprune/train/plan_history.h"

#include <filesystem>
#include <fstream>

using namespace libprune;

namespace fuzz {
namespace {

void put(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

std::string be32(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 255), char((v >> 8) & 255), char(v & 255)};
}

std::string idx_input(int flags, int n, int rows, int cols) {
  std::string images = be32(2051) + be32(n) + be32(rows) + be32(cols), labels = be32(2049) + be32(n);
  for (int i = 0; i < n * rows * cols; ++i) images += char(i * 7);
  for (int i = 0; i < n; ++i) labels += char(i % 10);
  return std::string(1, char(flags)) + char(images.size() & 255) + char(images.size() >> 8) + images + labels;
}

std::string cifar_input(bool hundred, int records) {
  std::string out(1, char(hundred));
  for (int r = 0; r < records; ++r) {
    if (hundred) out += char(r % 20);
    out += char(r % (hundred ? 100 : 10));
    for (int i = 0; i < 3072; ++i) out += char((i + r) & 255);
  }
  return out;
}

}  // namespace

void write_seeds(const std::string& dir) {
  for (const auto& [name, target] : targets()) std::filesystem::create_directories(dir + "/" + name);
  auto model = tiny_model();
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const auto x = torch::randn({4, 1, 8, 8});
  sgd.zero_grad();
  model->forward(x).sum().backward();
  sgd.step();
  io::CheckpointMeta meta;
  meta.epoch = 1;
  io::save_checkpoint(dir + "/checkpoint/seed-dense.ckpt", *model, sgd, meta);
  io::save_state_dict(*model, dir + "/state_dict/seed-libprune.pt");

  prune::Pruner pruner(model, [model, x] { return std::vector<torch::Tensor>{model->forward(x)}; },
                       prune::PrunerOptions().ratio(0.5).ignored_layers({"8"}));
  const auto plan = pruner.step(&sgd);
  put(dir + "/plan", "seed-plan.json", plan.to_json());
  put(dir + "/plan", "seed-history.json", train::plans_to_json(pruner.history()));
  meta.epoch = 2;
  meta.plans_json = train::plans_to_json(pruner.history());
  io::save_checkpoint(dir + "/checkpoint/seed-pruned.ckpt", *model, sgd, meta);

  put(dir + "/recipe", "seed-empty.json", std::string("{}\0training.epochs=3\0pruning.0.ratio=0.3", 41));
  put(dir + "/idx", "seed-test.idx", idx_input(0, 3, 4, 4));
  put(dir + "/idx", "seed-train.idx", idx_input(4, 2, 28, 28));
  put(dir + "/cifar", "seed-cifar10.bin", cifar_input(false, 2));
  put(dir + "/cifar", "seed-cifar100.bin", cifar_input(true, 1));
}

}  // namespace fuzz
