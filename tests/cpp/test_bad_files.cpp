// Files that go wrong: a disk that fills during a checkpoint write, and truncated or bit-flipped
// checkpoints, weights files and plans. Each gives an error naming the file (or the JSON path), or
// loads; none crashes, and a failed write leaves the previous file loadable.
#include "helpers.h"
#include "test_paths.h"

#include "libprune/io/checkpoint.h"
#include "libprune/io/file.h"
#include "libprune/io/state_dict.h"
#include "libprune/layers/plan.h"
#include "libprune/models/registry.h"
#include "libprune/train/plan_history.h"

#include <csignal>
#include <fstream>
#include <sys/resource.h>

using namespace libprune;

namespace {

// A trained-for-one-step model and its SGD (momentum state filled).
struct Trained {
  models::ModelPtr model = models::create("cifar_resnet20", models::ModelOptions().num_classes(10).in_channels(1));
  torch::optim::SGD sgd{model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9)};
  Trained() {
    sgd.zero_grad();
    model->forward(torch::randn({2, 1, 8, 8})).sum().backward();
    sgd.step();
  }
};

// Files larger than `bytes` cannot be written (EFBIG, SIGXFSZ ignored) until the guard goes.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &old_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lower = old_;
    lower.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lower);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
};

}  // namespace

TEST_CASE("bad files: a disk full during a checkpoint write gives an error, and the previous checkpoint loads",
          "[io]") {
  test::TempDir dir("disk_full");
  Trained run;
  const std::string path = dir.file("last.ckpt");
  io::CheckpointMeta meta;
  meta.epoch = 1;
  io::save_checkpoint(path, *run.model, run.sgd, meta);
  const auto saved = test::snapshot(*run.model);
  const auto size = std::filesystem::file_size(path);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : run.model->parameters()) p.add_(1.0);
  }
  meta.epoch = 2;
  std::string msg;
  {
    FileSizeLimit limit(size / 2);
    msg = test::message_of([&] { io::save_checkpoint(path, *run.model, run.sgd, meta); });
  }
  CHECK_THAT(msg, Catch::Contains("last.ckpt"));
  CHECK(io::read_checkpoint_meta(path).epoch == 1);
  Trained fresh;
  io::load_checkpoint(path, *fresh.model, fresh.sgd);
  CHECK(test::same(saved, test::snapshot(*fresh.model)));
  // No temp file is left behind.
  for (const auto& entry : std::filesystem::directory_iterator(dir.path)) CHECK(entry.path().filename() == "last.ckpt");
}

TEST_CASE("bad files: truncated and bit-flipped checkpoints and weights files are refused, never loaded wrong",
          "[io]") {
  test::TempDir dir("bad_files");
  Trained run;
  io::save_checkpoint(dir.file("good.ckpt"), *run.model, run.sgd, io::CheckpointMeta{});
  io::save_state_dict(*run.model, dir.file("good.pt"));
  const auto expected = test::snapshot(*run.model);
  for (const std::string kind : {"ckpt", "pt"}) {
    INFO(kind);
    const auto good = io::read_file(dir.file("good." + kind), "test");
    const std::string bad = dir.file("bad." + kind);
    std::vector<torch::Tensor> loaded_tensors;
    auto load = [&] {
      Trained target;
      if (kind == "ckpt") {
        io::read_checkpoint_meta(bad);
        io::load_checkpoint(bad, *target.model, target.sgd);
      } else {
        io::load_state_dict(*target.model, bad);
      }
      loaded_tensors = test::snapshot(*target.model);
    };
    // Every truncation is refused, naming the file.
    for (size_t k = 0; k < 24; ++k) {
      const size_t keep = good.size() * k / 24;
      test::write_bytes(bad, std::vector<char>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(keep)));
      INFO("truncated to " << keep << " of " << good.size() << " bytes");
      CHECK_THAT(test::message_of(load), Catch::Contains("bad." + kind));
    }
    // A flipped bit is refused naming the file (every entry's CRC-32 is checked), or it fell in
    // bytes no reader uses (timestamps, alignment padding) and the model loads exactly as saved.
    int refused = 0, loaded = 0;
    for (size_t k = 0; k < 64; ++k) {
      auto flipped = good;
      const size_t at = (k * 7919 * 31 + k * k) % flipped.size();
      flipped[at] = static_cast<char>(flipped[at] ^ (1 << (k % 8)));
      test::write_bytes(bad, flipped);
      const auto msg = test::message_of(load);
      INFO("flip at byte " << at << ": " << msg);
      if (msg.empty()) {
        ++loaded;
        CHECK(test::same(loaded_tensors, expected));
      } else {
        ++refused;
        CHECK_THAT(msg, Catch::Contains("bad." + kind));
      }
    }
    WARN(kind << ": " << refused << " of 64 bit flips refused with the file named, " << loaded << " loaded unchanged");
    CHECK(refused + loaded == 64);
    CHECK(refused >= 48);
  }
}

TEST_CASE("bad files: truncated and bit-flipped plans give errors with the JSON path, never a crash", "[io]") {
  layers::PruningPlan plan;
  plan.cuts.push_back({"conv1.weight", 0, 8, {0, 2, 5}});
  plan.cuts.push_back({"bn1.weight", 0, 8, {0, 2, 5}});
  plan.groups.push_back({"conv1.weight", {8, 3}});
  const auto text = plan.to_json();
  REQUIRE(layers::PruningPlan::from_json(text).to_json() == text);
  for (size_t keep = 0; keep + 1 < text.size(); ++keep) {
    INFO("truncated to " << keep);
    CHECK_FALSE(test::message_of([&] { layers::PruningPlan::from_json(text.substr(0, keep)); }).empty());
  }
  int refused = 0;
  for (size_t at = 0; at < text.size(); ++at) {
    auto flipped = text;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x10);
    refused += !test::message_of([&] { layers::PruningPlan::from_json(flipped); }).empty();
  }
  WARN("plan: " << refused << " of " << text.size() << " single-bit flips refused");
  CHECK(refused > 0);
  // A plan history (a checkpoint's header) that is not JSON, or not an array, names itself.
  const auto history = "[" + text + "]";
  REQUIRE(train::plans_from_json(history).size() == 1);
  CHECK_THAT(test::message_of([&] { train::plans_from_json(history.substr(0, history.size() - 1) + "i"); }),
             Catch::Contains("plan history is not valid JSON"));
  CHECK_THAT(test::message_of([&] { train::plans_from_json(text); }), Catch::Contains("plan history must be a JSON array"));
}

TEST_CASE("bad files: a zip64 end record that disagrees with the end record is refused", "[io]") {
  // LibTorch's reader takes the central directory from the zip64 end record torch.save writes
  // (56 bytes, then a 20-byte locator, then the 22-byte end record): were it not checked against
  // the end record, it could point at a second directory that nothing checked.
  test::TempDir dir("zip64");
  Trained run;
  io::save_state_dict(*run.model, dir.file("good.pt"));
  auto bytes = io::read_file(dir.file("good.pt"), "test");
  REQUIRE_NOTHROW(io::load_state_dict(*run.model, dir.file("good.pt")));
  const size_t record = bytes.size() - 22 - 20 - 56;
  REQUIRE(bytes[record] == 'P');
  REQUIRE(bytes[record + 3] == 6);
  bytes[record + 48] = static_cast<char>(bytes[record + 48] + 1);  // the directory's offset
  CHECK_THAT(test::message_of([&] { io::check_zip(bytes, "bad.pt", "weights file", "re-save it"); }),
             Catch::Contains("bad.pt") && Catch::Contains("zip64 end record disagrees"));
}

TEST_CASE("bad files: pickles LibTorch would mishandle are refused by the archive check, before LibTorch reads them",
          "[io]") {
  // Archives with every CRC right whose data.pkl has a 2 GB string length, a SETITEM on an empty
  // stack, a read of an unset memo slot, a SETITEMS with no mark, and a memo index of 2^31, which
  // makes LibTorch size its memo table at 32 GB (as the fuzzer's finds did at 4.9 and 30 GB);
  // written by tests/fuzz/make_seeds.py.
  const std::string corpus = std::string(LIBPRUNE_SOURCE_DIR) + "/tests/fuzz/corpus/";
  const std::vector<std::pair<std::string, std::string>> cases{
      {"state_dict/crash-pickle-length.pt", "a length runs past the end"},
      {"state_dict/crash-pickle-underflow.pt", "stack underflow"},
      {"state_dict/crash-pickle-memo.pt", "memo index never stored"},
      {"state_dict/crash-pickle-mark.pt", "no mark"},
      {"state_dict/crash-pickle-memo-huge.pt", "memo index far past the slots stored"},
      {"checkpoint/crash-pickle-memo-huge.ckpt", "memo index far past the slots stored"},
      {"checkpoint/crash-pickle-length.ckpt", "a length runs past the end"},
  };
  for (const auto& [file, why] : cases) {
    INFO(file);
    const auto bytes = io::read_file(corpus + file, "test input");
    CHECK_THAT(test::message_of([&] { io::check_zip(bytes, file, "weights file", "re-save it"); }),
               Catch::Contains(file) && Catch::Contains("pickle '") && Catch::Contains(why));
  }
}
