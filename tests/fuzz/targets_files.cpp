// Targets for files: checkpoints, state_dict files, IDX (MNIST) and CIFAR binaries.
#include "fuzz.h"

#include "libprune/data/cifar.h"
#include "libprune/data/mnist.h"
#include "libprune/io/checkpoint.h"
#include "libprune/io/state_dict.h"
#include "libprune/layers/apply.h"
#include "libprune/train/plan_history.h"

#include <filesystem>
#include <zlib.h>

using namespace libprune;

namespace {

std::string fresh_dir(const std::string& name) {
  const auto dir = std::filesystem::path(fuzz::scratch_dir()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

uint64_t le(const std::vector<uint8_t>& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | b[at + k];
  return v;
}

// The archive with the CRC-32 of every stored entry but TorchScript code recomputed (central and
// local headers), so that mutated archives get past libprune's CRC check and reach the unpickler
// and the loaders behind it. Code stays CRC-checked: LibTorch's TorchScript compiler crashes on
// crafted code (docs/design.md, "Files from outside"), so only a file made to attack it gets there, as with
// torch.load. The CRC check itself is tested in tests/cpp/test_bad_files.cpp.
std::vector<uint8_t> with_fixed_crcs(const uint8_t* data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  if (size < 22) return b;
  size_t end = size - 22;
  while (le(b, end, 4) != 0x06054b50) {
    if (end == 0 || size - end > 22 + 65535) return b;
    --end;
  }
  size_t at = le(b, end + 16, 4);
  for (uint64_t e = 0, n = le(b, end + 10, 2); e < n && at + 46 <= end && le(b, at, 4) == 0x02014b50; ++e) {
    const uint64_t packed = le(b, at + 20, 4), local = le(b, at + 42, 4);
    const size_t name_size = le(b, at + 28, 2);
    const auto name_at = b.begin() + static_cast<std::ptrdiff_t>(at + 46);
    const bool code =
        at + 46 + name_size <= end &&
        std::string(name_at, name_at + static_cast<std::ptrdiff_t>(name_size)).find("/code/") != std::string::npos;
    if (!code && le(b, at + 10, 2) == 0 && local + 30 <= end) {
      const uint64_t data_at = local + 30 + le(b, local + 26, 2) + le(b, local + 28, 2);
      if (data_at + packed <= end) {
        const auto crc = static_cast<uint32_t>(::crc32(0L, b.data() + data_at, static_cast<uInt>(packed)));
        for (int k = 0; k < 4; ++k) b[at + 16 + k] = b[local + 14 + k] = static_cast<uint8_t>(crc >> (8 * k));
      }
    }
    at += 46 + le(b, at + 28, 2) + le(b, at + 30, 2) + le(b, at + 32, 2);
  }
  return b;
}

}  // namespace

// Input: a checkpoint file. Resumed as the runner does: header, plan replay, then tensors.
LIBPRUNE_FUZZ_TARGET(checkpoint) {
  const std::string path = fresh_dir("checkpoint") + "/last.ckpt";
  const auto file = with_fixed_crcs(data, size);
  fuzz::write(path, file.data(), file.size());
  io::CheckpointMeta meta;
  bool read = false;
  fuzz::expect_clean([&] { meta = io::read_checkpoint_meta(path); read = true; }, {path});
  if (!read) return;
  auto model = fuzz::tiny_model();
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  bool replayed = false;
  fuzz::expect_clean(
      [&] {
        for (const auto& plan : train::plans_from_json(meta.plans_json)) layers::apply_plan(*model, plan, &sgd);
        replayed = true;
      },
      {"plan", "optimizer"});
  if (!replayed) return;
  const auto before = fuzz::snapshot(*model);
  fuzz::expect_clean([&] { io::load_checkpoint(path, *model, sgd); }, {path},
                     [&] { return fuzz::equal(*model, before); });
}

// Input: a state_dict file (torch.save of a dict, or libprune's own), loaded into the tiny model.
LIBPRUNE_FUZZ_TARGET(state_dict) {
  const std::string path = fresh_dir("state_dict") + "/weights.pt";
  const auto file = with_fixed_crcs(data, size);
  fuzz::write(path, file.data(), file.size());
  io::StateDict state;
  bool read = false;
  fuzz::expect_clean([&] { state = io::read_state_dict(path); read = true; }, {path});
  if (!read) return;
  auto model = fuzz::tiny_model();
  const auto before = fuzz::snapshot(*model);
  fuzz::expect_clean([&] { io::load_state_dict(*model, state, path); }, {path},
                     [&] { return fuzz::equal(*model, before); });
}

// Input: [flags][images length, 2 bytes little-endian][images file][labels file]. Flags: bit 0 and
// bit 1 gzip the images and labels file, bit 2 picks the training split's names.
LIBPRUNE_FUZZ_TARGET(idx) {
  if (size < 3) return;
  const int flags = data[0];
  const size_t images_size = std::min<size_t>(data[1] | (size_t(data[2]) << 8), size - 3);
  const std::string dir = fresh_dir("idx");
  const bool train = flags & 4;
  const std::string prefix = dir + (train ? "/train" : "/t10k");
  fuzz::write(prefix + "-images-idx3-ubyte" + (flags & 1 ? ".gz" : ""), data + 3, images_size);
  fuzz::write(prefix + "-labels-idx1-ubyte" + (flags & 2 ? ".gz" : ""), data + 3 + images_size,
              size - 3 - images_size);
  fuzz::expect_clean(
      [&] {
        const auto d = data::read_mnist(dir, train ? data::Split::Train : data::Split::Test);
        if (d.images.size(0) != d.labels.size(0)) std::abort();
      },
      {dir});
}

// Input: [flags][one CIFAR binary file]. Flag bit 0 reads it as CIFAR-100 (test.bin), else CIFAR-10.
LIBPRUNE_FUZZ_TARGET(cifar) {
  if (size < 1) return;
  const bool hundred = data[0] & 1;
  const std::string dir = fresh_dir("cifar");
  fuzz::write(dir + (hundred ? "/test.bin" : "/test_batch.bin"), data + 1, size - 1);
  fuzz::expect_clean(
      [&] {
        const auto d = data::read_cifar(dir, data::Split::Test, hundred ? 100 : 10);
        if (d.images.size(0) != d.labels.size(0) || d.images.size(1) != 3) std::abort();
      },
      {dir});
}
