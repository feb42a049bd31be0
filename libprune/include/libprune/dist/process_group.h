#pragma once
// Many processes on PyTorch's c10d: the launch environment torchrun sets, a Gloo process group
// behind a TCPStore rendezvous, and the collectives a data-parallel run needs, with errors that
// name the rank that stopped instead of hanging.
//
//   const auto env = libprune::dist::launch_env();          // RANK, WORLD_SIZE, MASTER_ADDR, ...
//   auto group = std::make_shared<libprune::dist::ProcessGroup>(env, std::chrono::seconds(60));
//   group->allreduce_sum(tensors, "the gradients");
//
// c10d types stay out of this header, so code that includes it builds without Gloo's headers.
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace libprune::dist {

// What torchrun (or libprune-run --nproc-per-node) puts in each process's environment.
struct LaunchEnv {
  int64_t rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool distributed() const { return world_size > 1; }
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Without
// WORLD_SIZE (or with 1) the process runs alone. Throws naming the variable and the fix when one is
// malformed or missing beside WORLD_SIZE > 1.
LaunchEnv launch_env();

// True when this build has c10d's Gloo backend (Debian's libgloo-dev headers were found).
bool available();

class ProcessGroup {
 public:
  // Rendezvous at master_addr:master_port (rank 0 serves the store) and a Gloo group over TCP.
  // `timeout` bounds the rendezvous and every collective: a rank that stops or hangs makes the
  // others fail within it, naming that rank.
  ProcessGroup(const LaunchEnv& env, std::chrono::milliseconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Collectives: every rank calls the same ones in the same order. `what` names the operation in
  // errors ("the gradients of step 12"). Tensors of any dtype; several are flattened into one.
  void allreduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what);
  void allreduce_max(std::vector<torch::Tensor>& tensors, const std::string& what);
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root, const std::string& what);
  // Rank `root`'s text on every rank (plans travel as JSON).
  std::string broadcast_string(const std::string& text, int64_t root, const std::string& what);
  void barrier(const std::string& what);

  // A reduction started now and waited for later (gradient buckets overlap the backward pass).
  class Pending;
  std::shared_ptr<Pending> allreduce_sum_async(torch::Tensor flat);
  void wait(const std::shared_ptr<Pending>& pending, const std::string& what);

  // One rank announces that something is ready (rank 0's tokenizer, its plan, another rank's data);
  // the others wait for it for as long as rank `from` beats, however long that takes (work one rank
  // does alone is not bounded by the collective timeout), and fail naming `from` when it stops.
  void announce(const std::string& key);
  void await(const std::string& key, const std::string& what, int64_t from = 0);

  // Every rank's tensors must be bitwise equal to rank 0's: compares a digest of each (name, shape,
  // bytes) with rank 0's and throws on every rank naming the first rank and tensor that differ.
  void check_replicas(const std::vector<std::pair<std::string, torch::Tensor>>& named, const std::string& when);

  struct Impl;

 private:
  int64_t rank_ = 0, world_size_ = 1;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Impl> impl_;
};

// The FNV-1a digest of a tensor's name, dtype, shape and bytes (contiguous, on the CPU).
uint64_t digest(const std::string& name, const torch::Tensor& tensor);

}  // namespace libprune::dist
