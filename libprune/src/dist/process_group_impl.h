#pragma once
// The backend behind dist::ProcessGroup: c10d's Gloo group and TCPStore (process_group_gloo.cpp),
// kept out of the public header. Every call throws c10::Error naming the operation and, when a
// rank stopped, that rank.
#include "libprune/dist/process_group.h"

namespace libprune::dist {

struct ProcessGroup::Impl {
  virtual ~Impl() = default;
  virtual void allreduce(torch::Tensor& flat, bool max, const std::string& what) = 0;
  virtual void broadcast(torch::Tensor& flat, int64_t root, const std::string& what) = 0;
  virtual void barrier(const std::string& what) = 0;
  virtual std::shared_ptr<Pending> allreduce_async(torch::Tensor flat) = 0;
  virtual void wait(Pending& pending, const std::string& what) = 0;
  virtual void announce(const std::string& key) = 0;
  virtual void await(const std::string& key, const std::string& what, int64_t from) = 0;
};

// The Gloo backend; throws naming the fix when this build has none.
std::unique_ptr<ProcessGroup::Impl> make_gloo(const LaunchEnv& env, std::chrono::milliseconds timeout);

}  // namespace libprune::dist
