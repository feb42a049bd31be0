#pragma once
// Process-wide settings that decide how fast LibTorch runs on a CPU, independent of the model.
#include <cstdint>

namespace libprune {

// Keeps freed tensor memory inside the process for reuse instead of returning it to the OS.
//
// glibc's malloc serves blocks above a (dynamic) threshold with mmap and unmaps them on free, and
// trims the top of the heap once enough of it is free. A training step frees and reallocates its
// activations every step, so each step faults fresh pages in again; on a VM, where a page fault
// costs far more than on bare metal, that dominated a ResNet-20 training step (measured on the
// 2-core dev VM: 200-570 ms per step at batch 128 with the defaults, 108 ms with this, in C++ and
// in Python alike). This sets a fixed mmap threshold of `max_block_bytes` (glibc caps it at
// 32 MiB) and turns heap trimming off, so the process keeps its peak working set.
//
// Returns false, changing nothing, where the C library is not glibc. Calling it again is harmless.
// Trainer applies it unless TrainOptions::retain_freed_memory(false); for a Python loop, call
// libprune.retain_freed_memory() once.
bool retain_freed_memory(int64_t max_block_bytes = int64_t{32} << 20);

}  // namespace libprune
