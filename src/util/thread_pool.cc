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

}  // namespace

ThreadPool::ThreadPool(int threads) {
  Require(threads >= 1, "a thread pool needs at least 1 thread, not {}", threads);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::ThreadPool(Backend backend, int threads) : backend_(std::move(backend)), backend_threads_(threads) {
  Require(backend_ != nullptr && threads >= 1, "a thread pool backend needs a function and at least 1 thread");
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  start_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lock(mutex_);
    start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    const auto* body = body_;
    const auto [begin, end] = Slice(count_, grain_, threads(), index);
    lock.unlock();
    if (begin < end) (*body)(begin, end, index);
    lock.lock();
    if (--pending_ == 0) finished_.notify_one();
  }
}

void ThreadPool::ParallelFor(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t, int)>& body) {
  if (count <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (backend_) {
    backend_(count, grain, body);
    return;
  }
  if (workers_.empty() || count <= grain) {
    body(0, count, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    count_ = count;
    grain_ = grain;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  start_.notify_all();
  const auto [begin, end] = Slice(count, grain, threads(), 0);
  if (begin < end) body(begin, end, 0);
  std::unique_lock<std::mutex> lock(mutex_);
  finished_.wait(lock, [&] { return pending_ == 0; });
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

void SetKernelThreads(int threads) { KernelPoolSlot() = std::make_unique<ThreadPool>(threads); }

void SetKernelBackend(ThreadPool::Backend backend, int threads) {
  KernelPoolSlot() = std::make_unique<ThreadPool>(std::move(backend), threads);
}

}  // namespace atq
