// Data-parallel runs on c10d (Gloo, loopback): the visible cases launch this test binary again as
// 2 ranks (dist::launch_local) running a hidden worker case, which REQUIREs inside each rank and
// leaves a marker file when it got to its end.
#include "helpers.h"
#include "libprune/data/dataset.h"
#include "libprune/dist/gradient_sync.h"
#include "libprune/dist/launch.h"
#include "libprune/recipe/runner.h"
#include "libprune/train/trainer.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

using namespace libprune;
namespace fs = std::filesystem;

namespace {

std::string env_or(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

void mark(const std::string& name) { std::ofstream(fs::path(env_or("LIBPRUNE_TEST_DIR")) / name) << "ok\n"; }

// Runs the hidden worker case `tag` as `n` ranks of this binary; returns the launcher's code.
int launch(const test::TempDir& dir, const std::string& tag, int n = 2, const std::string& fault = "",
           std::chrono::milliseconds grace = std::chrono::seconds(20)) {
  ::setenv("LIBPRUNE_TEST_DIR", dir.path.c_str(), 1);
  ::setenv("LIBPRUNE_TEST_FAULT", fault.c_str(), 1);
  return dist::launch_local(n, "/proc/self/exe", {tag}, grace);
}

std::string tiny_recipe(const std::string& dir, int64_t epochs = 3, int64_t limit_train = 64, int timeout_s = 10) {
  const std::string path = dir + "/tiny.json";
  std::ofstream(path) << R"({
    "name": "tiny", "model": {"name": "cifar_resnet20"},
    "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": )"
                      << limit_train << R"(, "limit_eval": 32},
    "training": {"epochs": )" << epochs << R"(, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05},
                 "progress": false, "threads": 1, "distributed": {"check_every": 1, "timeout_s": )" << timeout_s << R"(}},
    "pruning": [{"importance": "taylor", "schedule": {"kind": "one_shot", "start_epoch": 1}, "ratio": 0.5,
                 "ignored_layers": ["fc"], "round_to": 4, "taylor_batches": 2}],
    "report": {"latency_runs": 1, "latency_warmup": 0},
    "output_dir": ")" << dir << R"(/out"})";
  return path;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// "params" of a summary's pruned row.
std::string pruned_params(const std::string& summary) {
  const auto at = summary.find("\"params\"", summary.find("\"pruned\""));
  return summary.substr(at, summary.find_first_of(",\n}", at) - at);
}

}  // namespace

TEST_CASE("Loader shards: split batches keep the global batch, whole batches go round", "[dist]") {
  auto set = std::make_shared<data::TensorDataset>(torch::arange(40).view({40, 1, 1, 1}).to(torch::kFloat),
                                                   torch::zeros({40}, torch::kLong), 2);
  auto examples = [&](int64_t rank, int64_t world, bool train) {
    data::Loader loader(*set, 8, train, 3, train);
    loader.shard(rank, world, train);
    loader.start(1);
    std::vector<std::vector<int64_t>> batches;
    data::Batch b;
    while (loader.next(b)) {
      const auto x = b.x().flatten().to(torch::kLong);
      batches.emplace_back(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
    }
    return batches;
  };
  const auto one = examples(0, 1, true), r0 = examples(0, 2, true), r1 = examples(1, 2, true);
  REQUIRE(r0.size() == one.size());
  for (size_t i = 0; i < one.size(); ++i) {
    auto both = r0[i];
    both.insert(both.end(), r1[i].begin(), r1[i].end());
    CHECK(both == one[i]);  // the same global batch, whatever the number of ranks
  }
  std::multiset<int64_t> seen;
  for (int64_t r = 0; r < 3; ++r) {
    for (const auto& b : examples(r, 3, false)) seen.insert(b.begin(), b.end());
  }
  CHECK(seen.size() == 40);
  CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 40);  // each eval example once
  data::Loader odd(*set, 9, true, 0, true);
  CHECK_THROWS_WITH(odd.shard(0, 2, true), Catch::Contains("multiple of the number of processes"));
}

TEST_CASE("dist worker: bucketed gradients are the full batch's, rebuilt after a cut", "[.][dist_grad]") {
  const auto env = dist::launch_env();
  INFO("a worker: the [dist] tests start it as 2 processes");
  REQUIRE(env.distributed());
  auto group = std::make_shared<dist::ProcessGroup>(env, std::chrono::seconds(20));
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(6, 5), torch::nn::ReLU(), torch::nn::Linear(5, 3));
  const auto x = torch::randn({8, 6}), y = torch::randint(3, {8}, torch::kLong);
  auto reference = [&] {
    model->zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : model->parameters()) g.push_back(p.grad().clone());
    return g;
  };
  dist::GradientSync sync(group, 1e-5);  // tiny buckets: several, launched in order
  auto step = [&](int64_t n) {
    model->zero_grad();
    sync.prepare(*model);
    const auto part = torch::indexing::Slice(env.rank * 4, env.rank * 4 + 4);
    torch::nn::functional::cross_entropy(model->forward(x.index({part})), y.index({part})).backward();
    sync.finish(n);
  };
  for (int round = 0; round < 2; ++round) {
    const auto expected = reference();
    // Rank 0 alone runs a backward outside prepare/finish (a pruning criterion's): nothing is sent.
    if (env.rank == 0) torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    step(round);
    size_t i = 0;
    for (const auto& p : model->parameters()) CHECK(torch::allclose(p.grad(), expected[i++], 1e-5, 1e-6));
    if (round == 0) {  // a cut: hidden width 5 -> 4; the buckets must follow the new shapes
      torch::NoGradGuard no_grad;
      auto* first = model[0]->as<torch::nn::Linear>();
      auto* second = model[2]->as<torch::nn::Linear>();
      first->weight.set_data(first->weight.narrow(0, 0, 4).clone());
      first->bias.set_data(first->bias.narrow(0, 0, 4).clone());
      second->weight.set_data(second->weight.narrow(1, 0, 4).clone());
      for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
    }
  }
  CHECK(sync.stats().rebuilds == 2);
  CHECK(sync.stats().buckets > 1);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  group->check_replicas(named, "after the steps");  // equal: no throw
  if (env.rank == 1) named[1].second = named[1].second + 1e-7;
  CHECK_THROWS_WITH(group->check_replicas(named, "in the test"),
                    Catch::Contains("rank 1's model differs from rank 0's in the test: first at tensor 0.bias"));
  mark("grad_" + std::to_string(env.rank));
}

TEST_CASE("Two processes reduce gradients exactly and catch a replica that differs", "[dist]") {
  test::TempDir dir("dist_grad");
  REQUIRE(launch(dir, "[dist_grad]") == 0);
  CHECK(fs::exists(dir.file("grad_0")));
  CHECK(fs::exists(dir.file("grad_1")));
}

TEST_CASE("dist worker: a recipe run as one rank of several", "[.][dist_run]") {
  const std::string dir = env_or("LIBPRUNE_TEST_DIR");
  INFO("a worker: the [dist] tests start it as 2 processes");
  REQUIRE(dist::launch_env().distributed());
  const auto rank = dist::launch_env().rank;
  recipe::RunOptions o;
  o.print = false;
  o.resume = env_or("LIBPRUNE_TEST_RESUME") == "1";
  o.stop_after_epochs = std::atoll(env_or("LIBPRUNE_TEST_STOP", "0").c_str());
  const std::string fault = env_or("LIBPRUNE_TEST_FAULT");
  if (!fault.empty() && rank == 1) {
    // Dies without a word (kill) or freezes (hang: stopped, its sockets open) once rank 0 has
    // checkpointed epoch 0, in the middle of the next epoch.
    std::thread([dir, fault] {
      while (!fs::exists(dir + "/out/last.ckpt")) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      std::ofstream(dir + "/killed_at") << std::chrono::system_clock::now().time_since_epoch().count();
      std::raise(fault == "kill" ? SIGKILL : SIGSTOP);
    }).detach();
  }
  try {
    const auto result = recipe::run(dir + "/tiny.json", o);
    CHECK(result.completed == (o.stop_after_epochs == 0));
    mark("run_" + std::to_string(rank));
  } catch (const c10::Error& e) {
    const std::string text = e.what_without_backtrace();
    INFO(text);
    REQUIRE(!fault.empty());
    CHECK_THAT(text, Catch::Contains("rank 1 has stopped or hung"));
    const auto killed = std::stoll(read_all(dir + "/killed_at"));
    const double seconds = static_cast<double>(std::chrono::system_clock::now().time_since_epoch().count() - killed) *
                           std::chrono::system_clock::period::num / std::chrono::system_clock::period::den;
    // training.distributed.timeout_s, the heartbeat's 3 s of silence, and room for a loaded CI: named
    // well before the launcher's grace, not left hanging
    CHECK(seconds < (fault == "kill" ? 10 : 4) + 15);
    mark("named_" + std::to_string(rank));
    std::_Exit(3);  // a failed rank's exit, as libprune-run's: the launcher stops the frozen one
  }
}

TEST_CASE("Two processes prune like one and resume on one or two", "[dist]") {
  test::TempDir dir("dist_run");
  const auto recipe = tiny_recipe(dir.path.string());
  recipe::RunOptions quiet;
  quiet.print = false;
  const auto single = recipe::run(recipe, quiet);  // one process: the reference channel counts
  REQUIRE(single.completed);
  fs::remove_all(dir.file("out"));
  REQUIRE(launch(dir, "[dist_run]") == 0);
  CHECK(fs::exists(dir.file("run_1")));
  CHECK(pruned_params(read_all(dir.file("out/summary.json"))) == pruned_params(single.summary_json));

  // Stopped after the cut (epoch 2 of 3), then resumed on two processes and, from a copy, on one.
  fs::remove_all(dir.file("out"));
  ::setenv("LIBPRUNE_TEST_STOP", "2", 1);
  REQUIRE(launch(dir, "[dist_run]") == 0);
  ::unsetenv("LIBPRUNE_TEST_STOP");
  REQUIRE_FALSE(fs::exists(dir.file("out/summary.json")));
  fs::copy(dir.file("out"), dir.file("out_copy"), fs::copy_options::recursive);
  ::setenv("LIBPRUNE_TEST_RESUME", "1", 1);
  REQUIRE(launch(dir, "[dist_run]") == 0);
  ::unsetenv("LIBPRUNE_TEST_RESUME");
  CHECK(pruned_params(read_all(dir.file("out/summary.json"))) == pruned_params(single.summary_json));
  fs::remove_all(dir.file("out"));
  fs::rename(dir.file("out_copy"), dir.file("out"));
  auto resume = quiet;
  resume.resume = true;
  const auto alone = recipe::run(recipe, resume);
  REQUIRE(alone.completed);
  CHECK(pruned_params(alone.summary_json) == pruned_params(single.summary_json));
}

TEST_CASE("A killed rank is named by the other within the timeout, and the run resumes", "[dist]") {
  test::TempDir dir("dist_kill");
  tiny_recipe(dir.path.string(), 6, 512);  // long enough for rank 1 to die mid-run
  CHECK(launch(dir, "[dist_run]", 2, "kill", std::chrono::seconds(40)) != 0);  // grace beyond the 25 s bound
  CHECK(fs::exists(dir.file("named_0")));
  REQUIRE(fs::exists(dir.file("out/last.ckpt")));
  ::setenv("LIBPRUNE_TEST_RESUME", "1", 1);
  REQUIRE(launch(dir, "[dist_run]") == 0);
  ::unsetenv("LIBPRUNE_TEST_RESUME");
  CHECK(fs::exists(dir.file("run_0")));
  CHECK(fs::exists(dir.file("out/summary.json")));
}

TEST_CASE("A hung rank is named by the other once the timeout expires", "[dist]") {
  test::TempDir dir("dist_hang");
  tiny_recipe(dir.path.string(), 6, 512, 4);
  // Rank 1 freezes; rank 0's collective times out after 4 s and names it; the launcher kills the
  // frozen rank a grace period after rank 0 exits.
  CHECK(launch(dir, "[dist_run]", 2, "hang", std::chrono::seconds(2)) != 0);
  CHECK(fs::exists(dir.file("named_0")));
}
