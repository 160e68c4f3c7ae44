// The caching CPU allocator: a size-keyed free list under one mutex.
#include "torch/caching_allocator.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#include <c10/core/CPUAllocator.h>

#include "util/error.h"

namespace atq {
namespace {

constexpr size_t kMinCached = size_t{1} << 20;  // smaller blocks: libtorch's allocator (glibc's heaps serve them)
constexpr size_t kRounding = size_t{1} << 16;
constexpr size_t kAlignment = 64;               // libtorch's own CPU alignment

class CachingCpuAllocator final : public c10::Allocator {
 public:
  explicit CachingCpuAllocator(int64_t max_cached) : fallback_(c10::GetDefaultCPUAllocator()), max_cached_(max_cached) {}

  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinCached) return fallback_->allocate(n);
    const size_t size = (n + kRounding - 1) / kRounding * kRounding;
    void* data = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.allocations;
      const auto it = free_.find(size);
      if (it != free_.end()) {
        data = it->second;
        free_.erase(it);
        stats_.cached_bytes -= static_cast<int64_t>(size);
        ++stats_.reused;
      }
    }
    if (data == nullptr) {
      data = std::aligned_alloc(kAlignment, size);
      Require(data != nullptr, "out of memory: could not allocate {} MiB for a tensor", size >> 20);
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[data] = size;
    }
    return {data, data, &Release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Release; }

  CachingAllocatorStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  static void Release(void* data);

  void Free(void* data) const {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto found = sizes_.find(data);
    if (found == sizes_.end()) {
      // A small block from the fallback, freed through raw_deleter() (raw_allocate / raw_deallocate, as some of
      // libtorch's convolutions use): it goes back the way it came.
      lock.unlock();
      fallback_->raw_deleter()(data);
      return;
    }
    const size_t size = found->second;
    // Over the bound: give back the largest cached blocks first (the least likely to fit the next request).
    while (stats_.cached_bytes + static_cast<int64_t>(size) > max_cached_ && !free_.empty()) {
      const auto largest = std::prev(free_.end());
      stats_.cached_bytes -= static_cast<int64_t>(largest->first);
      sizes_.erase(largest->second);
      std::free(largest->second);
      free_.erase(largest);
    }
    if (stats_.cached_bytes + static_cast<int64_t>(size) > max_cached_) {
      sizes_.erase(data);
      std::free(data);
      return;
    }
    free_.emplace(size, data);
    stats_.cached_bytes += static_cast<int64_t>(size);
  }

  c10::Allocator* fallback_;
  int64_t max_cached_;
  mutable std::mutex mutex_;
  mutable std::multimap<size_t, void*> free_;           // cached blocks by size
  mutable std::unordered_map<void*, size_t> sizes_;     // every live or cached block this allocator made
  mutable CachingAllocatorStats stats_;
};

CachingCpuAllocator* installed = nullptr;
std::mutex install_mutex;

void CachingCpuAllocator::Release(void* data) { installed->Free(data); }

int64_t DefaultBound() {
  const int64_t pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const int64_t quarter = pages > 0 && page > 0 ? pages * page / 4 : int64_t{1} << 30;
  return std::min<int64_t>(quarter, int64_t{8} << 30);
}

}  // namespace

void UseCachingCpuAllocator(int64_t max_cached_bytes) {
  std::lock_guard<std::mutex> lock(install_mutex);
  if (installed != nullptr) return;
  // Never destroyed: tensors freed during static destruction still call Release.
  installed = new CachingCpuAllocator(max_cached_bytes > 0 ? max_cached_bytes : DefaultBound());
  c10::SetCPUAllocator(installed, /*priority=*/1);
}

CachingAllocatorStats CachingCpuAllocatorStats() {
  return installed != nullptr ? installed->stats() : CachingAllocatorStats{};
}

}  // namespace atq
