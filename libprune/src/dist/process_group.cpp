#include "libprune/dist/process_group.h"

#include "process_group_impl.h"

#include <cstdlib>
#include <cstring>
#include <map>

namespace libprune::dist {
namespace {

int64_t env_int(const char* name, int64_t fallback, int64_t low) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  TORCH_CHECK_VALUE(end && *end == '\0' && x >= low, "environment variable ", name, "=\"", v,
                    "\" is not an integer >= ", low, ". Fix: launch with torchrun or libprune-run --nproc-per-node N, "
                    "or set ", name, " to a whole number");
  return x;
}

// The tensors' positions by dtype and device, in order of first appearance (the same on every rank).
std::vector<std::vector<size_t>> by_kind(const std::vector<torch::Tensor>& tensors) {
  std::vector<std::vector<size_t>> groups;
  std::vector<std::pair<torch::ScalarType, torch::Device>> types;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto t = std::make_pair(tensors[i].scalar_type(), tensors[i].device());
    const auto it = std::find(types.begin(), types.end(), t);
    if (it == types.end()) {
      types.push_back(t);
      groups.push_back({i});
    } else {
      groups[static_cast<size_t>(it - types.begin())].push_back(i);
    }
  }
  return groups;
}

// Runs `op` on one flat copy per dtype and device and writes the result back into the tensors.
template <typename Op>
void flattened(std::vector<torch::Tensor>& tensors, Op op) {
  for (const auto& group : by_kind(tensors)) {
    std::vector<torch::Tensor> parts;
    for (const size_t i : group) parts.push_back(tensors[i].detach().reshape(-1));
    auto flat = torch::cat(parts).contiguous();
    op(flat);
    int64_t offset = 0;
    for (const size_t i : group) {
      auto& t = tensors[i];
      const int64_t n = t.numel();
      torch::NoGradGuard no_grad;
      t.detach().copy_(flat.narrow(0, offset, n).view(t.sizes()));
      offset += n;
    }
  }
}

}  // namespace

LaunchEnv launch_env() {
  LaunchEnv env;
  env.world_size = env_int("WORLD_SIZE", 1, 1);
  if (env.world_size == 1) return env;
  TORCH_CHECK_VALUE(std::getenv("RANK"), "WORLD_SIZE=", env.world_size, " is set but RANK is not. Fix: launch with "
                    "torchrun or libprune-run --nproc-per-node N, which set both");
  env.rank = env_int("RANK", 0, 0);
  TORCH_CHECK_VALUE(env.rank < env.world_size, "RANK=", env.rank, " is not below WORLD_SIZE=", env.world_size,
                    ". Fix: ranks count from 0 to WORLD_SIZE - 1");
  env.local_rank = env_int("LOCAL_RANK", env.rank, 0);
  env.local_world_size = env_int("LOCAL_WORLD_SIZE", env.world_size, 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) env.master_addr = a;
  env.master_port = static_cast<int>(env_int("MASTER_PORT", 29500, 1));
  TORCH_CHECK_VALUE(env.master_port < 65536, "MASTER_PORT=", env.master_port, " is not a TCP port. Fix: a port "
                    "below 65536 that rank 0 can listen on, e.g. 29500");
  return env;
}

uint64_t digest(const std::string& name, const torch::Tensor& tensor) {
  // FNV-1a over 64-bit words (bytes for the tail): fast enough to run after every step.
  uint64_t h = 1469598103934665603ULL;
  const auto mix = [&h](uint64_t x) { h = (h ^ x) * 1099511628211ULL; };
  for (const char c : name) mix(static_cast<unsigned char>(c));
  mix(static_cast<uint64_t>(tensor.scalar_type()));
  for (const int64_t s : tensor.sizes()) mix(static_cast<uint64_t>(s));
  const auto t = tensor.detach().to(torch::kCPU).contiguous();
  const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
  const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes + i, 8);
    mix(w);
  }
  for (; i < n; ++i) mix(bytes[i]);
  return h;
}

ProcessGroup::ProcessGroup(const LaunchEnv& env, std::chrono::milliseconds timeout)
    : rank_(env.rank), world_size_(env.world_size), timeout_(timeout) {
  TORCH_CHECK_VALUE(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size, "ProcessGroup: rank ", env.rank,
                    " of ", env.world_size, " is not a rank. Fix: ranks count from 0 to WORLD_SIZE - 1");
  TORCH_CHECK_VALUE(timeout.count() > 0, "ProcessGroup: the timeout must be positive, got ", timeout.count(), " ms");
  impl_ = make_gloo(env, timeout);
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::allreduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what) {
  flattened(tensors, [&](torch::Tensor& flat) { impl_->allreduce(flat, false, what); });
}

void ProcessGroup::allreduce_max(std::vector<torch::Tensor>& tensors, const std::string& what) {
  flattened(tensors, [&](torch::Tensor& flat) { impl_->allreduce(flat, true, what); });
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int64_t root, const std::string& what) {
  flattened(tensors, [&](torch::Tensor& flat) { impl_->broadcast(flat, root, what); });
}

std::string ProcessGroup::broadcast_string(const std::string& text, int64_t root, const std::string& what) {
  auto size = torch::full({1}, rank_ == root ? static_cast<int64_t>(text.size()) : 0, torch::kLong);
  impl_->broadcast(size, root, what);
  auto bytes = torch::zeros({size.item<int64_t>()}, torch::kUInt8);
  if (rank_ == root && !text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  if (bytes.numel() > 0) impl_->broadcast(bytes, root, what);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

void ProcessGroup::barrier(const std::string& what) { impl_->barrier(what); }

std::shared_ptr<ProcessGroup::Pending> ProcessGroup::allreduce_sum_async(torch::Tensor flat) {
  return impl_->allreduce_async(std::move(flat));
}

void ProcessGroup::wait(const std::shared_ptr<Pending>& pending, const std::string& what) { impl_->wait(*pending, what); }

void ProcessGroup::announce(const std::string& key) { impl_->announce(key); }

void ProcessGroup::await(const std::string& key, const std::string& what, int64_t from) {
  TORCH_CHECK_VALUE(from >= 0 && from < world_size_, "await: rank ", from, " is not a rank of ", world_size_);
  impl_->await(key, what, from);
}

void ProcessGroup::check_replicas(const std::vector<std::pair<std::string, torch::Tensor>>& named,
                                  const std::string& when) {
  // Rank 0's digests go to every rank; each compares its own; then every rank learns, for each
  // rank, the first tensor that differs (0: none), so all of them stop together with one message.
  const auto n = static_cast<int64_t>(named.size());
  auto count = torch::full({1}, n, torch::kLong);
  impl_->broadcast(count, 0, "the tensor count for the replica check " + when);
  const int64_t n0 = count.item<int64_t>();
  auto mine = torch::empty({n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const auto& [name, t] = named[static_cast<size_t>(i)];
    const uint64_t d = digest(name, t);
    int64_t as_signed;
    std::memcpy(&as_signed, &d, 8);
    mine[i] = as_signed;
  }
  auto theirs = n == n0 ? mine.clone() : torch::zeros({n0}, torch::kLong);
  impl_->broadcast(theirs, 0, "rank 0's parameter digests " + when);
  int64_t first_bad = 0;  // 1-based; -1: the count differs
  if (n != n0) {
    first_bad = -1;
  } else {
    const auto differ = mine.ne(theirs).nonzero();
    if (differ.numel() > 0) first_bad = differ[0][0].item<int64_t>() + 1;
  }
  auto report = torch::zeros({world_size_}, torch::kLong);
  report[rank_] = first_bad == -1 ? n + 1 : first_bad;
  impl_->allreduce(report, true, "the replica check " + when);
  for (int64_t r = 1; r < world_size_; ++r) {
    const int64_t bad = report[r].item<int64_t>();
    if (bad == 0) continue;
    std::string where = bad > n0 || bad > n ? "a different number of tensors than rank 0 (" + std::to_string(n0) + ")"
                                            : "tensor " + named[static_cast<size_t>(bad - 1)].first;
    TORCH_CHECK(false, "rank ", r, "'s model differs from rank 0's ", when, ": first at ", where,
                ". Every rank must hold bitwise the same model. Fix: run every rank with the same recipe, data, "
                "LibTorch and threads; if they are the same, this is a libprune bug: report it with the recipe");
  }
}

}  // namespace libprune::dist
