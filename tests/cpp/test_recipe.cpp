// Recipes and the runner: loading, checkpoints, resume, datasets the runner reads.
#include "helpers.h"
#include "libprune/data/cifar.h"
#include "libprune/data/image_folder.h"
#include "libprune/io/checkpoint.h"
#include "libprune/io/file.h"
#include "libprune/libprune.h"
#include "libprune/recipe/recipe.h"
#include "libprune/recipe/runner.h"
#include "test_paths.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

using namespace libprune;

namespace {

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A tiny recipe on synthetic data that trains, prunes and fine-tunes in a few seconds.
std::string tiny_recipe(const test::TempDir& dir) {
  const std::string path = dir.file("tiny.json");
  write_text(path, R"({
    "name": "tiny", "model": {"name": "cifar_resnet20"},
    "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": 64, "limit_eval": 32},
    "training": {"epochs": 3, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05}, "progress": false, "threads": 2},
    "pruning": [{"importance": "l2", "schedule": {"kind": "agp", "start_epoch": 1, "end_epoch": 2}, "ratio": 0.5,
                 "ignored_layers": ["fc"], "round_to": 8}],
    "report": {"latency_runs": 2, "latency_warmup": 1},
    "output_dir": ")" + dir.file("out") + R"("})");
  return path;
}

// `"key": value` of one section ("dense", "pruned") of a summary's JSON text.
std::string field(const std::string& s, const std::string& section, const std::string& key) {
  const auto at = s.find("\"" + key + "\"", s.find("\"" + section + "\""));
  return s.substr(at, s.find_first_of(",\n}", at) - at);
}

// Every tensor a checkpoint of the tiny recipe holds, loaded as a resume loads it (the model rebuilt,
// its plans replayed): weights and buffers by name, then each parameter's SGD momentum.
std::map<std::string, torch::Tensor> checkpoint_tensors(const std::string& path) {
  auto model = models::create("cifar_resnet20", models::ModelOptions().num_classes(10).in_channels(1));
  for (const auto& plan : nlohmann::json::parse(io::read_checkpoint_meta(path).plans_json)) {
    layers::apply_plan(*model, layers::PruningPlan::from_json(plan.dump()));
  }
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05));
  io::load_checkpoint(path, *model, opt);
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model->named_parameters()) {
    out[p.key()] = p.value();
    const auto& state = opt.state().at(c10::guts::to_string(p.value().unsafeGetTensorImpl()));
    out["momentum of " + p.key()] = static_cast<torch::optim::SGDParamState&>(*state).momentum_buffer();
  }
  for (const auto& b : model->named_buffers()) out[b.key()] = b.value();
  return out;
}

// A run's metrics log without its wall-clock times.
std::string log_without_times(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return std::regex_replace(text.str(), std::regex(R"re("(seconds|step_ms)":[-0-9.e+]+,?)re"), "");
}

// Two runs of one recipe (one killed and resumed) ended bit for bit the same: every weight, buffer
// and optimizer state tensor of the last checkpoint, and the metrics log but for its times.
void check_same_end(const std::string& unbroken, const std::string& resumed) {
  const auto a = checkpoint_tensors(unbroken + "/last.ckpt"), b = checkpoint_tensors(resumed + "/last.ckpt");
  CHECK(a.size() == b.size());
  CHECK(std::count_if(a.begin(), a.end(), [](const auto& kv) { return kv.first.rfind("momentum of ", 0) == 0; }) > 20);
  for (const auto& [name, t] : a) {
    INFO(name);
    REQUIRE(b.count(name));
    CHECK(torch::equal(t, b.at(name)));
  }
  CHECK(log_without_times(unbroken + "/metrics.jsonl") == log_without_times(resumed + "/metrics.jsonl"));
}

}  // namespace

TEST_CASE("runner: a fractional schedule cuts inside an epoch; killed and resumed, it ends the same", "[recipe]") {
  test::TempDir dir("fractional");
  const auto path = tiny_recipe(dir);
  // 64 images in batches of 16: 4 batches an epoch, so 1.25 and 1.5 fall after batches 0 and 1 of epoch 1.
  const std::vector<std::string> sets{"pruning.0.schedule.end_epoch=1.5", "pruning.0.schedule.frequency=0.25"};
  recipe::RunOptions full;
  full.print = false;
  full.sets = sets;
  full.sets.push_back("output_dir=" + dir.file("a"));
  const auto a = recipe::run(path, full);
  REQUIRE(a.completed);
  std::ifstream log(dir.file("a/metrics.jsonl"));
  std::vector<double> cut_times, epoch_ratios;
  auto number_after = [](const std::string& line, const std::string& key) {
    return std::stod(line.substr(line.find("\"" + key + "\":") + key.size() + 3));
  };
  for (std::string line; std::getline(log, line);) {
    if (line.find("\"type\":\"prune\"") != std::string::npos) cut_times.push_back(number_after(line, "epoch"));
    if (line.find("\"type\":\"epoch\"") != std::string::npos) epoch_ratios.push_back(number_after(line, "ratio"));
  }
  REQUIRE(cut_times.size() == 2);
  CHECK(cut_times[0] == Approx(1.25));
  CHECK(cut_times[1] == Approx(1.5));
  // Each epoch's record carries the ratio its model trained at: none in epoch 0, 50% from epoch 1.
  REQUIRE(epoch_ratios.size() == 3);
  CHECK(epoch_ratios[0] == 0);
  CHECK(epoch_ratios[1] == Approx(0.5));
  CHECK(epoch_ratios[2] == Approx(0.5));
  recipe::RunOptions killed = full;
  killed.sets.back() = "output_dir=" + dir.file("b");
  killed.stop_after_epochs = 2;
  CHECK_FALSE(recipe::run(path, killed).completed);
  killed.stop_after_epochs = 0;
  killed.resume = true;
  const auto b = recipe::run(path, killed);
  REQUIRE(b.completed);
  for (const char* key : {"accuracy", "params", "macs"}) {
    CHECK(field(b.summary_json, "pruned", key) == field(a.summary_json, "pruned", key));
  }
  CHECK(field(a.summary_json, "pruned", "params") != field(a.summary_json, "dense", "params"));
  check_same_end(dir.file("a"), dir.file("b"));  // killed after both cuts: the plans replayed
  // A frequency of 0 is refused with the JSON path.
  recipe::RunOptions bad = full;
  bad.sets.push_back("pruning.0.schedule.frequency=0");
  CHECK_THAT(test::message_of([&] { recipe::run(path, bad); }),
             Catch::Contains("pruning.0.schedule.frequency") && Catch::Contains("must be > 0"));
}

TEST_CASE("recipes: bad JSON, unknown keys, wrong types and ratios above the maximum name the path and the fix", "[recipe]") {
  auto msg = [](const std::string& text, std::vector<std::string> sets = {}) {
    return test::message_of([&] { recipe::load_text(text, "configs/x.json", sets); });
  };
  CHECK_THAT(msg("{\"training\": {\"epochs\": 3,}}"), Catch::Contains("configs/x.json is not valid JSON"));
  CHECK_THAT(msg(R"({"training": {"epoch": 3}})"),
             Catch::Contains("at training.epoch: unknown key") && Catch::Contains("use one of") && Catch::Contains("epochs"));
  CHECK_THAT(msg(R"({"training": {"epochs": "3"}})"), Catch::Contains("at training.epochs: expected a number, got a string"));
  CHECK_THAT(msg(R"({"pruning": [{"ratio": 0.95, "max_ratio": 0.9}]})"),
             Catch::Contains("at pruning.0.ratio") && Catch::Contains("above max_ratio"));
  CHECK_THAT(msg(R"({"pruning": [{"importance": 3}]})"), Catch::Contains("pruning.0.importance: expected a string"));
  CHECK_THAT(msg("{}", {"training.nope=1"}), Catch::Contains("training.nope: unknown key"));
  CHECK_THAT(msg("{}", {"novalue"}), Catch::Contains("key=value"));
  // Found by the fuzzer (tests/fuzz): a number no type holds, and a --set text that is not UTF-8.
  CHECK_THAT(msg(R"({"training": {"epochs": 1e99999}})"), Catch::Contains("configs/x.json cannot be read"));
  CHECK_THAT(msg("{}", {"output_dir=a\x9f" "b"}), Catch::Contains("--set \"output_dir\"") && Catch::Contains("UTF-8"));
  // The report section is checked when the recipe loads, not after training when it is used.
  CHECK_THAT(msg(R"({"report": {"latency_runs": 0}})"),
             Catch::Contains("at report.latency_runs: must be >= 1, got 0") && Catch::Contains("Fix:"));
  CHECK_THAT(msg("{}", {"report.latency_threads=-1"}), Catch::Contains("at report.latency_threads: must be >= 0"));
  CHECK_THAT(msg("{}", {"report.latency_batches=[1, 0]"}), Catch::Contains("at report.latency_batches.1: must be >= 1"));
  // --set values are JSON or plain strings, and reach array entries.
  const auto j = recipe::load_text(R"({"pruning": [{}]})", "x", {"pruning.0.ratio=0.3", "output_dir=runs/y"});
  CHECK_THAT(j, Catch::Contains("\"ratio\": 0.3") && Catch::Contains("\"output_dir\": \"runs/y\""));
  CHECK_THAT(recipe::defaults(), Catch::Contains("\"latency_batches\""));
}

TEST_CASE("checkpoints: round trip, corrupt files, and a failed write keeps the previous one", "[recipe]") {
  test::TempDir dir("ckpt");
  torch::manual_seed(0);
  auto m = torch::nn::Linear(3, 2);
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  m->forward(torch::randn({4, 3})).sum().backward();
  opt.step();
  io::CheckpointMeta meta;
  meta.epoch = 2;
  meta.recipe_id = "abc";
  meta.plans_json = "[]";
  const auto path = dir.file("last.ckpt");
  io::save_checkpoint(path, *m, opt, meta);
  const auto before = m->weight.detach().clone();
  // A write that fails halfway (a full disk): the error says so, the old file still loads.
  {
    torch::NoGradGuard ng;
    m->weight.add_(1.0);
  }
  io::detail::fail_next_write_after(100);
  CHECK_THAT(test::message_of([&] { io::save_checkpoint(path, *m, opt, meta); }), Catch::Contains("previous file"));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path), std::filesystem::directory_iterator()) == 1);
  CHECK(io::read_checkpoint_meta(path).epoch == 2);
  io::load_checkpoint(path, *m, opt);
  CHECK(torch::equal(m->weight, before));
  // Corrupt and foreign files.
  write_text(dir.file("bad.ckpt"), "not a checkpoint");
  CHECK_THAT(test::message_of([&] { io::read_checkpoint_meta(dir.file("bad.ckpt")); }),
             Catch::Contains("corrupt") && Catch::Contains("bad.ckpt"));
  CHECK_THAT(test::message_of([&] { io::read_checkpoint_meta(dir.file("missing.ckpt")); }), Catch::Contains("does not exist"));

  // The model fits but the optimizer does not: LibTorch's loader moves the state in group by group
  // and checks each group's size as it goes, so a checkpoint whose second group is larger fails
  // after the first group's state was replaced. The model and that state are as before.
  using torch::optim::OptimizerParamGroup;
  auto extra = torch::zeros({2}, torch::requires_grad());
  torch::optim::SGD writer({OptimizerParamGroup({m->weight}), OptimizerParamGroup({m->bias, extra})},
                           torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::optim::SGD reader({OptimizerParamGroup({m->weight}), OptimizerParamGroup({m->bias})},
                           torch::optim::SGDOptions(0.1).momentum(0.9));
  for (auto* opt_step : {&writer, &reader}) {
    m->zero_grad();
    extra.mutable_grad() = torch::Tensor();
    (m->forward(torch::randn({4, 3})).sum() + extra.sum()).backward();
    opt_step->step();
  }
  io::save_checkpoint(dir.file("groups.ckpt"), *m, writer, meta);
  {
    torch::NoGradGuard ng;
    m->weight.add_(1.0);
  }
  const auto weight_before = m->weight.detach().clone();
  auto momentum = [&] {
    return static_cast<const torch::optim::SGDParamState&>(
               *reader.state().at(c10::guts::to_string(m->weight.unsafeGetTensorImpl())))
        .momentum_buffer()
        .clone();
  };
  const auto momentum_before = momentum();
  CHECK_THAT(test::message_of([&] { io::load_checkpoint(dir.file("groups.ckpt"), *m, reader); }),
             Catch::Contains("does not fit this model and optimizer") && Catch::Contains("different size") &&
                 Catch::Contains("Fix:"));
  CHECK(torch::equal(m->weight, weight_before));
  CHECK(torch::equal(momentum(), momentum_before));
}

TEST_CASE("data: CIFAR binary files, and missing or truncated ones", "[recipe]") {
  test::TempDir dir("cifar");
  std::vector<char> rec(3073, 7);
  for (int i = 1; i <= 5; ++i) {
    std::ofstream f(dir.file("data_batch_" + std::to_string(i) + ".bin"), std::ios::binary);
    for (int r = 0; r < 2; ++r) {
      rec[0] = static_cast<char>(r + i);
      f.write(rec.data(), static_cast<std::streamsize>(rec.size()));
    }
  }
  const auto d = data::read_cifar(dir.path.string(), data::Split::Train, 10);
  CHECK(d.images.sizes() == torch::IntArrayRef({10, 3, 32, 32}));
  CHECK(d.labels[3].item<int64_t>() == 3);
  CHECK_THAT(test::message_of([&] { data::read_cifar(dir.path.string(), data::Split::Test, 10); }),
             Catch::Contains("test_batch.bin") && Catch::Contains("missing"));
  std::ofstream(dir.file("test_batch.bin"), std::ios::binary) << "short";
  CHECK_THAT(test::message_of([&] { data::read_cifar(dir.path.string(), data::Split::Test, 10); }),
             Catch::Contains("truncated"));
  CHECK_THAT(test::message_of([&] { data::read_cifar(dir.file("nope"), data::Split::Train, 10); }),
             Catch::Contains("does not exist"));
}

TEST_CASE("runner: trains, prunes on schedule, writes summary; resume after a kill ends like an unbroken run", "[recipe]") {
  test::TempDir dir("runner");
  const auto path = tiny_recipe(dir);
  recipe::RunOptions quiet;
  quiet.print = false;
  const auto full = recipe::run(path, quiet);
  REQUIRE(full.completed);
  const auto summary = full.summary_json;
  CHECK_THAT(summary, Catch::Contains("\"dense\"") && Catch::Contains("\"pruned\"") && Catch::Contains("latency_ms_b32") &&
                          Catch::Contains("size_bytes"));
  // With latency_threads 0, each model's batch is timed at 2 threads (the recipe trains on 2), then
  // at 1, in both layouts; the fastest is kept and named.
  for (const char* side : {"dense", "pruned"}) {
    const auto threads = field(summary, side, "latency_threads_b1");
    CHECK((threads == "\"latency_threads_b1\": 1" || threads == "\"latency_threads_b1\": 2"));
    CHECK_THAT(summary, Catch::Contains("latency_ms_b32_threads1") && Catch::Contains("latency_ms_b32_threads2") &&
                            Catch::Contains("latency_ms_b32_channels_last") && Catch::Contains("latency_ms_b32_nchw"));
    CHECK_THAT(field(summary, side, "latency_format_b32"), Catch::Contains("nchw") || Catch::Contains("channels_last"));
  }
  CHECK(std::filesystem::exists(dir.file("out/summary.json")));
  CHECK(std::filesystem::exists(dir.file("out/best.ckpt")));
  const auto meta = io::read_checkpoint_meta(dir.file("out/last.ckpt"));
  CHECK(meta.epoch == 3);
  CHECK(meta.plans_json.find("cuts") != std::string::npos);

  // Killed after epoch 2 (one cut done), then resumed: the same final figures.
  recipe::RunOptions killed = quiet;
  killed.sets = {"output_dir=" + dir.file("out2")};
  killed.stop_after_epochs = 2;
  CHECK_FALSE(recipe::run(path, killed).completed);
  CHECK(io::read_checkpoint_meta(dir.file("out2/last.ckpt")).epoch == 2);
  recipe::RunOptions resumed = quiet;
  resumed.sets = killed.sets;
  resumed.resume = true;
  const auto again = recipe::run(path, resumed);
  REQUIRE(again.completed);
  for (const char* key : {"accuracy", "params", "macs"}) {
    CHECK(field(again.summary_json, "pruned", key) == field(summary, "pruned", key));
    CHECK(field(again.summary_json, "dense", key) == field(summary, "dense", key));
  }
  check_same_end(dir.file("out"), dir.file("out2"));  // killed between the two cuts
  // Resuming with other settings is refused, and nothing is written.
  resumed.sets.push_back("training.optimizer.lr=0.01");
  CHECK_THAT(test::message_of([&] { recipe::run(path, resumed); }), Catch::Contains("another recipe") && Catch::Contains("Fix:"));
  // A missing data path.
  recipe::RunOptions bad = quiet;
  bad.sets = {"data.kind=fashion_mnist", "data.path=" + dir.file("nowhere")};
  CHECK_THAT(test::message_of([&] { recipe::run(path, bad); }), Catch::Contains("nowhere"));
}

namespace {
// A 24-bit BMP of w x h pixels of one colour.
void write_bmp(const std::string& path, int w, int h, unsigned char v) {
  const int row = (w * 3 + 3) / 4 * 4, size = 54 + row * h;
  std::vector<unsigned char> b(static_cast<size_t>(size), 0);
  auto put32 = [&](int at, int x) {
    for (int k = 0; k < 4; ++k) b[static_cast<size_t>(at + k)] = static_cast<unsigned char>((x >> (8 * k)) & 255);
  };
  b[0] = 'B';
  b[1] = 'M';
  put32(2, size);
  put32(10, 54);
  put32(14, 40);
  put32(18, w);
  put32(22, h);
  b[26] = 1;
  b[28] = 24;
  put32(34, row * h);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w * 3; ++x) b[static_cast<size_t>(54 + y * row + x)] = static_cast<unsigned char>(v + x % 3 * 20);
  }
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), size);
}
}  // namespace

TEST_CASE("image folder: transforms, unreadable files skipped or refused, and the ResNet-50 recipe at reduced size",
          "[imagefolder]") {
  if (!data::image_folder_available()) {
    CHECK_THAT(test::message_of([] { data::ImageFolder("x"); }), Catch::Contains("without OpenCV"));
    WARN("ImageFolder tests skipped: built without OpenCV");
    return;
  }
  test::TempDir dir("images");
  for (const char* split : {"train", "val"}) {
    for (int c = 0; c < 2; ++c) {
      const auto folder = dir.path / split / ("class" + std::to_string(c));
      std::filesystem::create_directories(folder);
      for (int i = 0; i < 3; ++i) write_bmp((folder / (std::to_string(i) + ".bmp")).string(), 40 + 8 * i, 36, static_cast<unsigned char>(60 * c + i));
    }
  }
  write_text((dir.path / "train" / "class0" / "broken.jpg").string(), "not an image");
  const auto root = (dir.path / "train").string();
  data::ImageFolder set(root, data::ImageFolderOptions().crop(16).resize(20));
  CHECK(set.size() == 7);
  CHECK(set.num_classes() == 2);
  const auto eval = set.get({0, 1, 2, 3}, false);
  CHECK(eval.x().sizes() == torch::IntArrayRef({4, 3, 16, 16}));
  CHECK(set.skipped() == 1);  // broken.jpg is index 3, after 0/1/2.bmp of class0
  // Normalised per channel, in RGB order: 0.bmp of class0 is one colour, R 40, G 20, B 0.
  const std::vector<double> mean{0.485, 0.456, 0.406}, stdev{0.229, 0.224, 0.225}, rgb{40, 20, 0};
  for (int c = 0; c < 3; ++c) {
    const auto plane = eval.x()[0][c];
    CHECK(plane.min().item<double>() == Approx((rgb[c] / 255 - mean[c]) / stdev[c]).margin(1e-5));
    CHECK(plane.max().item<double>() == Approx((rgb[c] / 255 - mean[c]) / stdev[c]).margin(1e-5));
  }
  CHECK(eval.y[0].item<int64_t>() == 0);
  CHECK(eval.y[3].item<int64_t>() == 0);  // broken.jpg: its slot holds another image of the batch
  CHECK_THAT(test::message_of([&] { set.get({0, 7}, false); }), Catch::Contains("index 7 is out of range for 7 images"));
  CHECK(set.get({4, 5}, true, 3).x().sizes() == torch::IntArrayRef({2, 3, 16, 16}));
  data::ImageFolder strict(root, data::ImageFolderOptions().crop(16).resize(20).skip_unreadable(false));
  CHECK_THAT(test::message_of([&] { strict.get({3}, false); }), Catch::Contains("broken.jpg") && Catch::Contains("skip_unreadable"));
  std::filesystem::create_directories(dir.path / "empty" / "a");
  CHECK_THAT(test::message_of([&] { data::ImageFolder((dir.path / "empty").string()); }), Catch::Contains("has no images"));
  CHECK_THAT(test::message_of([&] { data::ImageFolder((dir.path / "missing").string()); }), Catch::Contains("does not exist"));

  // configs/resnet50_imagenet_filters50_30ep.json, as shipped, at reduced size for one short epoch.
  recipe::RunOptions o;
  o.print = false;
  o.sets = {"data.path=" + dir.path.string(), "data.crop=32", "data.resize=36", "training.device=cpu", "training.epochs=2",
            "training.batch_size=4", "training.max_batches=1", "pruning.0.schedule.end_epoch=1",
            "pruning.0.schedule.frequency=1", "report.latency_batches=[1]", "report.latency_runs=1",
            "output_dir=" + dir.file("r50")};
  const auto run = recipe::run(std::string(LIBPRUNE_SOURCE_DIR) + "/configs/resnet50_imagenet_filters50_30ep.json", o);
  REQUIRE(run.completed);
  CHECK_THAT(run.summary_json, Catch::Contains("resnet50"));
}


TEST_CASE("runner: a gradient criterion cutting before any batch takes the first batches' gradients", "[recipe]") {
  test::TempDir dir("taylor_at_zero");
  recipe::RunOptions o;
  o.print = false;
  o.sets = {"pruning.0.importance=taylor", "pruning.0.schedule.kind=one_shot", "pruning.0.schedule.start_epoch=0",
            "pruning.0.taylor_batches=2", "training.epochs=1"};
  const auto r = recipe::run(tiny_recipe(dir), o);  // failed with "taylor importance needs gradients"
  REQUIRE(r.completed);
  CHECK(field(r.summary_json, "pruned", "params") != field(r.summary_json, "dense", "params"));
}
