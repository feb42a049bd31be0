#pragma once
// Starts N copies of a program on this machine as the ranks of one data-parallel job, the way
// torchrun --nproc-per-node N does: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR
// (127.0.0.1) and a free MASTER_PORT in each one's environment. SIGINT and SIGTERM reach every
// rank once (each stops after its current batch). When a rank fails, the others get `grace` to
// stop by themselves (they name it) before they are killed.
#include <chrono>
#include <string>
#include <vector>

namespace libprune::dist {

// Runs `program` with `args` (argv[1:]) as `nproc` ranks and waits for all of them. Returns 0 when
// every rank succeeded, else the first failing rank's exit code (128 + signal when killed); a line
// on stderr names each rank that failed.
int launch_local(int nproc, const std::string& program, const std::vector<std::string>& args,
                 std::chrono::milliseconds grace);

}  // namespace libprune::dist
