// A fixed set of worker threads that split a range of work items between them (output rows of a kernel).
// The calling thread takes a share too, so a pool of N threads runs N - 1 workers. Workers spin for a short
// while after each job before they sleep, so back-to-back calls (a model's layers) skip the wake-up of a sleeping
// thread, which costs tens of microseconds on a virtual machine.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace atq {

class ThreadPool {
 public:
  // Splits [0, count) into slices with bounds on multiples of grain and runs body(begin, end, thread) on each.
  using Backend = std::function<void(int64_t count, int64_t grain,
                                     const std::function<void(int64_t, int64_t, int)>& body)>;

  explicit ThreadPool(int threads);  // threads >= 1 (1: everything runs on the caller)
  // No threads of its own: ParallelFor hands the work to `backend` (another runtime's threads, e.g. libtorch's
  // OpenMP team, which would otherwise spin against a second set of workers on the same cores).
  ThreadPool(Backend backend, int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Becomes ThreadPool(threads) or ThreadPool(backend, threads) in place, so that whoever holds a reference to
  // this pool (a decoder built earlier) runs on the new threads. Not while a ParallelFor runs.
  void Reset(int threads);
  void Reset(Backend backend, int threads);

  int threads() const { return backend_ ? backend_threads_ : static_cast<int>(workers_.size()) + 1; }

  // Calls body(begin, end, thread) on `threads()` contiguous slices of [0, count) whose bounds are multiples of
  // `grain` (the last may be short), and returns when all are done. Not reentrant: one ParallelFor at a time.
  void ParallelFor(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t, int)>& body);

  // The grain that gives each task at least `min_task_values` of work when one item of the range holds
  // `values_per_item` (rows of a matrix: its width), so that short ranges stay on the caller.
  static int64_t GrainFor(int64_t values_per_item, int64_t min_task_values) {
    return std::max<int64_t>(1, min_task_values / std::max<int64_t>(1, values_per_item));
  }

 private:
  void StartWorkers(int threads);
  void StopWorkers();
  void WorkerLoop(int index, uint64_t seen);

  Backend backend_;
  int backend_threads_ = 0;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_, finished_;
  const std::function<void(int64_t, int64_t, int)>* body_ = nullptr;
  int64_t count_ = 0, grain_ = 1;
  std::atomic<uint64_t> generation_{0};  // changed under mutex_; read without it while spinning
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
};

// The pool kernels use when the caller passes none: sized by SetKernelThreads (default: hardware threads), or
// running on another runtime's threads after SetKernelBackend. One object for the process: both reset it in
// place, so a reference taken before (CpuDecoder keeps one) stays valid and follows the new setting.
ThreadPool& KernelThreadPool();
void SetKernelThreads(int threads);
void SetKernelBackend(ThreadPool::Backend backend, int threads);

}  // namespace atq
