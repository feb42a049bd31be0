// c10d's Gloo process group behind a TCPStore rendezvous, with a heartbeat per rank in the store so
// that a failed collective can name the rank that stopped. Compiled with Gloo's headers (Debian's
// libgloo-dev) when CMake finds them; otherwise every entry point says how to get them.
#include "process_group_impl.h"

#include "libprune/io/file.h"

#if LIBPRUNE_HAVE_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <thread>

namespace libprune::dist {

#if !LIBPRUNE_HAVE_GLOO

bool available() { return false; }

struct ProcessGroup::Pending {};

std::unique_ptr<ProcessGroup::Impl> make_gloo(const LaunchEnv& env, std::chrono::milliseconds) {
  TORCH_CHECK_VALUE(false, "WORLD_SIZE=", env.world_size, " asks for ", env.world_size, " processes, but this libprune "
                    "was built without c10d's Gloo backend (its headers were not found). Fix: install libgloo-dev "
                    "(bash scripts/setup.sh does) and rebuild, or run one process (unset WORLD_SIZE)");
}

#else

bool available() { return true; }

struct ProcessGroup::Pending {
  c10::intrusive_ptr<c10d::Work> work;
  std::vector<at::Tensor> tensors;
};

namespace {

constexpr auto kBeat = std::chrono::milliseconds(500);
constexpr auto kSilence = std::chrono::milliseconds(3000);  // no beat for this long: stopped or hung

std::string beat_key(int64_t rank) { return "libprune/beat/" + std::to_string(rank); }

bool loopback(const std::string& addr) { return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1"; }

class GlooGroup : public ProcessGroup::Impl {
 public:
  GlooGroup(const LaunchEnv& env, std::chrono::milliseconds timeout)
      : rank_(env.rank), world_(env.world_size), timeout_(timeout) {
    const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
    try {
      c10d::TCPStoreOptions o;
      o.port = static_cast<uint16_t>(env.master_port);
      o.isServer = env.rank == 0;
      o.numWorkers = static_cast<size_t>(env.world_size);
      o.waitWorkers = true;
      o.timeout = timeout;
      store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
      c10d::TCPStoreOptions b = o;
      b.isServer = false;
      b.numWorkers = c10::nullopt;
      b.waitWorkers = false;
      b.timeout = std::chrono::milliseconds(5000);
      beats_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, b);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "rank ", rank_, " of ", world_, ": the rendezvous at ", where, " failed within ",
                  timeout.count() / 1000.0, " s (", io::error_text(e), "). Fix: start all ", world_,
                  " ranks with the same MASTER_ADDR and MASTER_PORT, where rank 0 can listen (a free port)");
    }
    try {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname && *ifname) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (loopback(env.master_addr)) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, static_cast<int>(rank_), static_cast<int>(world_),
                                                          options);
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "rank ", rank_, " of ", world_, ": connecting the Gloo group failed (", io::error_text(e),
                  "). Fix: every host must reach the others; set GLOO_SOCKET_IFNAME to the network interface to use");
    }
    heart_ = std::thread([this] { beat(); });
  }

  ~GlooGroup() override {
    {
      std::lock_guard<std::mutex> lock(stop_mutex_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
    if (heart_.joinable()) heart_.join();
  }

  void allreduce(torch::Tensor& flat, bool max, const std::string& what) override {
    c10d::AllreduceOptions o;
    o.reduceOp = max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    std::vector<at::Tensor> t{flat};
    run(what, [&] { group_->allreduce(t, o)->wait(); });
  }

  void broadcast(torch::Tensor& flat, int64_t root, const std::string& what) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    std::vector<at::Tensor> t{flat};
    run(what, [&] { group_->broadcast(t, o)->wait(); });
  }

  void barrier(const std::string& what) override {
    run(what, [&] { group_->barrier()->wait(); });
  }

  std::shared_ptr<ProcessGroup::Pending> allreduce_async(torch::Tensor flat) override {
    auto p = std::make_shared<ProcessGroup::Pending>();
    p->tensors = {std::move(flat)};
    p->work = group_->allreduce(p->tensors);
    return p;
  }

  void wait(ProcessGroup::Pending& pending, const std::string& what) override {
    run(what, [&] { pending.work->wait(); });
  }

  void announce(const std::string& key) override {
    std::lock_guard<std::mutex> lock(beats_mutex_);
    beats_->set("libprune/announce/" + key, std::vector<uint8_t>{1});
  }

  void await(const std::string& key, const std::string& what, int64_t from) override {
    // As long as `from` beats, wait: what it prepares may take longer than the collective timeout.
    int64_t last = -1;
    auto since = std::chrono::steady_clock::now();
    for (;;) {
      int64_t beat = 0;
      try {
        std::lock_guard<std::mutex> lock(beats_mutex_);
        if (beats_->check({"libprune/announce/" + key})) return;
        beat = beats_->add(beat_key(from), 0);
      } catch (const std::exception& e) {
        TORCH_CHECK(false, "rank ", rank_, ": waiting for ", what, " failed because rank 0 stopped (the rendezvous "
                    "store it hosts no longer answers: ", io::error_text(e), "). Fix: see rank 0's output");
      }
      const auto now = std::chrono::steady_clock::now();
      if (beat != last) {
        last = beat;
        since = now;
      }
      TORCH_CHECK(now - since < kSilence, "rank ", rank_, ": waiting for ", what, " failed because rank ", from,
                  " stopped or hung (no heartbeat for ", kSilence.count() / 1000.0, " s). Fix: see rank ", from,
                  "'s output");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

 private:
  void beat() {
    std::unique_lock<std::mutex> stop(stop_mutex_);
    while (!stopping_) {
      try {
        std::lock_guard<std::mutex> lock(beats_mutex_);
        beats_->add(beat_key(rank_), 1);
      } catch (const std::exception&) {
        return;  // the store is gone (rank 0 ended): nothing left to tell
      }
      stop_cv_.wait_for(stop, kBeat, [this] { return stopping_; });
    }
  }

  // The other ranks whose heartbeat stopped, in words ("" when all beat).
  std::string stopped_ranks() {
    std::vector<int64_t> before(static_cast<size_t>(world_)), after(before.size());
    try {
      for (int64_t r = 0; r < world_; ++r) {
        std::lock_guard<std::mutex> lock(beats_mutex_);
        if (r != rank_) before[static_cast<size_t>(r)] = beats_->add(beat_key(r), 0);
      }
      std::this_thread::sleep_for(kSilence);
      for (int64_t r = 0; r < world_; ++r) {
        std::lock_guard<std::mutex> lock(beats_mutex_);
        if (r != rank_) after[static_cast<size_t>(r)] = beats_->add(beat_key(r), 0);
      }
    } catch (const std::exception&) {
      return rank_ == 0 ? "" : "rank 0 stopped (the rendezvous store it hosts no longer answers)";
    }
    std::ostringstream out;
    int64_t n = 0;
    for (int64_t r = 0; r < world_; ++r) {
      if (r == rank_ || after[static_cast<size_t>(r)] != before[static_cast<size_t>(r)]) continue;
      out << (n++ ? ", " : "") << r;
    }
    if (n == 0) return "";
    return std::string(n == 1 ? "rank " : "ranks ") + out.str() + (n == 1 ? " has" : " have") +
           " stopped or hung (no heartbeat for " + std::to_string(kSilence.count() / 1000) + " s)";
  }

  template <typename F>
  void run(const std::string& what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      const std::string text = io::error_text(e);
      const std::string who = stopped_ranks();
      if (!who.empty()) {
        TORCH_CHECK(false, "rank ", rank_, ": ", what, " failed because ", who, ". Fix: see that rank's own output "
                    "for why; then start every rank again with --resume (the last checkpoint holds the last completed "
                    "epoch). [c10d: ", text, "]");
      }
      TORCH_CHECK(false, "rank ", rank_, ": ", what, " failed while every rank is alive (", text, "). Fix: if one rank "
                  "was busy longer than the timeout (", timeout_.count() / 1000.0, " s), raise "
                  "training.distributed.timeout_s; otherwise the ranks run different recipes: start them the same way");
    }
  }

  int64_t rank_, world_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::TCPStore> store_, beats_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  std::mutex beats_mutex_, stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread heart_;
};

}  // namespace

std::unique_ptr<ProcessGroup::Impl> make_gloo(const LaunchEnv& env, std::chrono::milliseconds timeout) {
  return std::make_unique<GlooGroup>(env, timeout);
}

#endif

}  // namespace libprune::dist
