// Files that go wrong: a disk that fills during a checkpoint write, and truncated or bit-flipped
// checkpoints, weights files and plans. Each gives an error naming the file (or the JSON path), or
// loads; none crashes, and a failed write leaves the previous file loadable.
#include "helpers.h"

#include "libprune/io/checkpoint.h"
#include "libprune/io/file.h"
#include "libprune/io/state_dict.h"
#include "libprune/layers/plan.h"
#include "libprune/models/registry.h"

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

TEST_CASE("bad files: truncated and bit-flipped checkpoints and weights files never crash", "[io]") {
  test::TempDir dir("bad_files");
  Trained run;
  io::save_checkpoint(dir.file("good.ckpt"), *run.model, run.sgd, io::CheckpointMeta{});
  io::save_state_dict(*run.model, dir.file("good.pt"));
  for (const std::string kind : {"ckpt", "pt"}) {
    INFO(kind);
    const auto good = io::read_file(dir.file("good." + kind), "test");
    const std::string bad = dir.file("bad." + kind);
    auto load = [&] {
      Trained target;
      if (kind == "ckpt") {
        io::read_checkpoint_meta(bad);
        io::load_checkpoint(bad, *target.model, target.sgd);
      } else {
        io::load_state_dict(*target.model, bad);
      }
    };
    // Every truncation is refused, naming the file.
    for (size_t k = 0; k < 24; ++k) {
      const size_t keep = good.size() * k / 24;
      test::write_bytes(bad, std::vector<char>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(keep)));
      INFO("truncated to " << keep << " of " << good.size() << " bytes");
      CHECK_THAT(test::message_of(load), Catch::Contains("bad." + kind));
    }
    // A flipped bit is refused naming the file, or loads (a flip inside tensor data is not
    // detectable without a checksum over it); the process survives either way.
    int refused = 0, loaded = 0;
    for (size_t k = 0; k < 64; ++k) {
      auto flipped = good;
      const size_t at = (k * 7919 * 31 + k * k) % flipped.size();
      flipped[at] = static_cast<char>(flipped[at] ^ (1 << (k % 8)));
      test::write_bytes(bad, flipped);
      const auto msg = test::message_of(load);
      if (msg.empty()) {
        ++loaded;
      } else {
        ++refused;
        INFO("flip at byte " << at << ": " << msg);
        CHECK_THAT(msg, Catch::Contains("bad." + kind));
      }
    }
    WARN(kind << ": " << refused << " of 64 bit flips refused with the file named, " << loaded << " loaded");
    CHECK(refused + loaded == 64);
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
}
