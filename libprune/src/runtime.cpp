#include "libprune/runtime.h"

#include <algorithm>
#include <limits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace libprune {

bool retain_freed_memory(int64_t max_block_bytes) {
#if defined(__GLIBC__)
  const int64_t threshold = std::clamp<int64_t>(max_block_bytes, int64_t{128} << 10, int64_t{32} << 20);
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(threshold)) == 1;
  // The trim threshold is a size_t inside glibc but set through an int: the largest int keeps
  // up to 2 GiB of free heap top, far more than a training step's activations at these sizes.
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
  return mmap_ok && trim_ok;
#else
  (void)max_block_bytes;
  return false;
#endif
}

}  // namespace libprune
