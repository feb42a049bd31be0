#include "libprune/dist/launch.h"

#include <c10/util/Exception.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <csignal>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <atomic>
#include <cstring>
#include <iostream>
#include <thread>

extern char** environ;

namespace libprune::dist {
namespace {

std::atomic<int> forwarded_signal{0};
void remember(int sig) { forwarded_signal = sig; }

// A TCP port on 127.0.0.1 that is free now (the kernel picks it).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TORCH_CHECK(fd >= 0, "launch: cannot open a socket to find a free port: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  TORCH_CHECK(ok, "launch: cannot find a free port on 127.0.0.1: ", std::strerror(errno),
              ". Fix: set MASTER_PORT and start the ranks with torchrun");
  return ntohs(a.sin_port);
}

bool is_rank_variable(const char* entry) {
  for (const char* name : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="}) {
    if (std::strncmp(entry, name, std::strlen(name)) == 0) return true;
  }
  return false;
}

// Each rank's environment: this process's, with the rank variables replaced.
std::vector<std::vector<std::string>> rank_environments(int nproc, int port) {
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(nproc));
  for (int r = 0; r < nproc; ++r) {
    auto& e = envs[static_cast<size_t>(r)];
    for (char** p = environ; *p; ++p) {
      if (!is_rank_variable(*p)) e.emplace_back(*p);
    }
    e.push_back("RANK=" + std::to_string(r));
    e.push_back("LOCAL_RANK=" + std::to_string(r));
    e.push_back("WORLD_SIZE=" + std::to_string(nproc));
    e.push_back("LOCAL_WORLD_SIZE=" + std::to_string(nproc));
    e.push_back("MASTER_ADDR=127.0.0.1");
    e.push_back("MASTER_PORT=" + std::to_string(port));
  }
  return envs;
}

// Waits for every rank, passing signals on; the first failure starts the grace period.
int wait_for(std::vector<pid_t>& pids, std::chrono::milliseconds grace) {
  const int nproc = static_cast<int>(pids.size());
  int result = 0, alive = nproc;
  bool stopping = false;  // a signal was passed on: ranks that stop by it (exit 130) did not fail
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (alive > 0) {
    if (const int sig = forwarded_signal.exchange(0)) {
      for (const pid_t p : pids) {
        if (p > 0) ::kill(p, sig);
      }
      stopping = true;
    }
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    for (int r = 0; done > 0 && r < nproc; ++r) {
      if (pids[static_cast<size_t>(r)] != done) continue;
      pids[static_cast<size_t>(r)] = -1;
      --alive;
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code == 0) continue;
      if (stopping && code == 130) {
        if (result == 0) result = code;
        continue;
      }
      std::cerr << "libprune-run: rank " << r << " exited with code " << code
                << (WIFSIGNALED(status) ? " (killed by signal " + std::to_string(WTERMSIG(status)) + ")" : "") << std::endl;
      if (result == 0) {
        result = code;
        deadline = std::chrono::steady_clock::now() + grace;
      }
    }
    if (done > 0) continue;
    if (std::chrono::steady_clock::now() > deadline) {
      for (int r = 0; r < nproc; ++r) {
        if (pids[static_cast<size_t>(r)] <= 0) continue;
        std::cerr << "libprune-run: rank " << r << " did not stop within " << grace.count() / 1000.0
                  << " s of another's failure; killing it" << std::endl;
        ::kill(pids[static_cast<size_t>(r)], SIGKILL);
      }
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return result;
}

}  // namespace

int launch_local(int nproc, const std::string& program, const std::vector<std::string>& args,
                 std::chrono::milliseconds grace) {
  TORCH_CHECK_VALUE(nproc >= 1, "--nproc-per-node must be at least 1, got ", nproc);
  // Everything exec needs is built before fork: the child only calls async-signal-safe functions.
  auto envs = rank_environments(nproc, free_port());
  std::vector<char*> argv{const_cast<char*>(program.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::vector<char*>> envps;
  for (auto& e : envs) {
    envps.emplace_back();
    for (auto& v : e) envps.back().push_back(v.data());
    envps.back().push_back(nullptr);
  }
  forwarded_signal = 0;
  auto old_int = std::signal(SIGINT, remember);
  auto old_term = std::signal(SIGTERM, remember);
  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);  // a terminal's Ctrl-C reaches the launcher, which passes it on once
#ifdef __linux__
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the launcher killed: its ranks go too
#endif
      ::execve(argv[0], argv.data(), envps[static_cast<size_t>(r)].data());
      ::_exit(127);
    }
    if (pid < 0) {  // none of them may run alone
      const int error = errno;
      for (const pid_t p : pids) {
        if (p > 0) ::kill(p, SIGKILL), ::waitpid(p, nullptr, 0);
      }
      std::signal(SIGINT, old_int);
      std::signal(SIGTERM, old_term);
      TORCH_CHECK(false, "launch: cannot start rank ", r, ": ", std::strerror(error));
    }
    pids[static_cast<size_t>(r)] = pid;
  }
  const int result = wait_for(pids, grace);
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  return result;
}

}  // namespace libprune::dist
