// libtorch's CPU tensors of a megabyte and more through a cache of freed blocks, as its CUDA allocator does on the
// GPU. glibc hands every allocation above 32 MiB (above 4 MiB in atq, tools/atq/main.cc) to mmap and returns it on
// free, so a training step's hundreds of megabytes of activations and logits arrive as fresh pages: the kernel
// zero-fills and maps every one, each step again. Measured on gpt2-mini QAT (8 x 256 tokens, 2 cores): 63
// tokens/s with a third of the time in page faults, 161 with glibc's mmap turned off; the cache reuses a block of
// the same size instead and keeps nothing beyond its bound.
#pragma once

#include <cstdint>

namespace atq {

struct CachingAllocatorStats {
  int64_t allocations = 0;  // large allocations asked for
  int64_t reused = 0;       // of which served from the cache
  int64_t cached_bytes = 0; // held for reuse now
};

// Installs the cache as libtorch's CPU allocator for the rest of the process (idempotent). Blocks under 1 MiB go
// to libtorch's own allocator; larger ones are rounded up to 64 KiB and reused by size; freed blocks stay cached
// while the cache holds at most `max_cached_bytes` (0: a quarter of physical memory, at most 8 GiB).
void UseCachingCpuAllocator(int64_t max_cached_bytes = 0);

CachingAllocatorStats CachingCpuAllocatorStats();

}  // namespace atq
