// ThreadPool: workers wait for a generation counter to move, run their slice, and report back.
#include "util/thread_pool.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "util/error.h"

namespace atq {
namespace {

// Slice `index` of `parts` over [0, count) in units of `grain`.
std::pair<int64_t, int64_t> Slice(int64_t count, int64_t grain, int parts, int index) {
  const int64_t units = (count + grain - 1) / grain;
  const int64_t begin_unit = units * index / parts;
  const int64_t end_unit = units * (index + 1) / parts;
  return {std::min(count, begin_unit * grain), std::min(count, end_unit * grain)};
}

// Busy-waits while `waiting()` holds, for up to about 100 microseconds.
template <typename Condition>
void SpinWhile(Condition waiting) {
  constexpr int kSpins = 20000;
  for (int spin = 0; spin < kSpins && waiting(); ++spin) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) { StartWorkers(threads); }

ThreadPool::ThreadPool(Backend backend, int threads) { Reset(std::move(backend), threads); }

ThreadPool::~ThreadPool() { StopWorkers(); }

void ThreadPool::Reset(int threads) {
  StopWorkers();
  backend_ = nullptr;
  backend_threads_ = 0;
  StartWorkers(threads);
}

void ThreadPool::Reset(Backend backend, int threads) {
  Require(backend != nullptr && threads >= 1, "a thread pool backend needs a function and at least 1 thread");
  StopWorkers();
  backend_ = std::move(backend);
  backend_threads_ = threads;
}

void ThreadPool::StartWorkers(int threads) {
  Require(threads >= 1, "a thread pool needs at least 1 thread, not {}", threads);
  // A worker waits for the generation to move past the one it starts at, not past 0: after a Reset the counter
  // has moved already, and a worker starting from 0 would run a job that is not there.
  const uint64_t generation = generation_.load();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i, generation] { WorkerLoop(i, generation); });
}

void ThreadPool::StopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  start_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  stopping_ = false;
}

void ThreadPool::WorkerLoop(int index, uint64_t seen) {
  for (;;) {
    SpinWhile([&] { return generation_.load(std::memory_order_acquire) == seen && !stopping_; });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
    }
    const auto [begin, end] = Slice(count_, grain_, threads(), index);
    if (begin < end) (*body_)(begin, end, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_.notify_one();
    }
  }
}

void ThreadPool::ParallelFor(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t, int)>& body) {
  if (count <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // One slice's work runs on the caller: a backend (libtorch's OpenMP team) would open a parallel region for it,
  // which per call of a decode step costs more than the work (norms, one row's quantization).
  if (count <= grain) {
    body(0, count, 0);
    return;
  }
  if (backend_) {
    backend_(count, grain, body);
    return;
  }
  if (workers_.empty()) {
    body(0, count, 0);
    return;
  }
  // The job is published before the generation moves; workers read it after they see the new generation.
  body_ = &body;
  count_ = count;
  grain_ = grain;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_.notify_all();
  const auto [begin, end] = Slice(count, grain, threads(), 0);
  if (begin < end) body(begin, end, 0);
  SpinWhile([&] { return pending_.load(std::memory_order_acquire) != 0; });
  std::unique_lock<std::mutex> lock(mutex_);
  finished_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
}

namespace {
std::unique_ptr<ThreadPool>& KernelPoolSlot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
}  // namespace

ThreadPool& KernelThreadPool() {
  auto& pool = KernelPoolSlot();
  if (!pool) pool = std::make_unique<ThreadPool>(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return *pool;
}

void SetKernelThreads(int threads) {
  auto& pool = KernelPoolSlot();
  if (pool) {
    pool->Reset(threads);
  } else {
    pool = std::make_unique<ThreadPool>(threads);
  }
}

void SetKernelBackend(ThreadPool::Backend backend, int threads) {
  auto& pool = KernelPoolSlot();
  if (pool) {
    pool->Reset(std::move(backend), threads);
  } else {
    pool = std::make_unique<ThreadPool>(std::move(backend), threads);
  }
}

}  // namespace atq
